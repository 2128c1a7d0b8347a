"""Public prompt sets: :func:`read_prompts` and :func:`make_pairs`.

Prompt files in public formats (:func:`read_prompts`)
-----------------------------------------------------
Researchers usually have these benchmarks as local files; the format is
recognised from the column names (or pass ``format=``):

==============  ===========================================  ==========================
format          layout                                       parsed as
==============  ===========================================  ==========================
advbench        CSV ``goal,target``                          text=goal, harmful
harmbench       CSV ``Behavior,FunctionalCategory,``         text=Behavior (with its
                ``SemanticCategory,Tags,ContextString,``     ContextString first when
                ``BehaviorID``                               set), category=Semantic-
                                                             Category, harmful
jailbreakbench  CSV ``Index,Goal,Target,Behavior,``          text=Goal, category=
                ``Category,Source``                          Category, harmful
xstest          CSV ``id,prompt,type,label,focus,note``      text=prompt, category=type,
                                                             harmful = type starts with
                                                             ``contrast_``
alpaca          JSON list of ``{"instruction", "input",``    text=instruction (+ newline
                ``"output"}``                                + input when set), harmless
==============  ===========================================  ==========================

Harmful and harmless prompt sets become pairs with :func:`make_pairs` (for
example AdvBench with Alpaca), which matches each harmful prompt to the
harmless prompt closest in word count.

Every problem with a file raises :class:`~patching.errors.PromptFileError`
whose message names the file, the line (for malformed rows), what is wrong
and how to fix it.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from patching.errors import PromptFileError
from patching.prompts.pairs import (
    Prompt,
    PromptPair,
    _check_path,
    _csv_rows,
    _read_text,
    _require_not_blank,
)

__all__ = ["PUBLIC_FORMATS", "make_pairs", "read_prompts"]

#: Formats :func:`read_prompts` understands (besides ``"auto"``).
PUBLIC_FORMATS: tuple[str, ...] = ("advbench", "harmbench", "jailbreakbench", "xstest", "alpaca")

# Columns that identify each CSV format. JailbreakBench also has a "Behavior"
# column (a short behaviour name), so it must be recognised before HarmBench.
_FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "jailbreakbench": ("Goal",),
    "harmbench": ("Behavior",),
    "advbench": ("goal",),
    "xstest": ("prompt", "type"),
    "alpaca": ("instruction",),
}


# --------------------------------------------------------------------------- public formats


def _opt(row: dict[str, str], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    return value.strip() or None


def _prompt_from_row(fmt: str, row: dict[str, str]) -> Prompt:
    if fmt == "advbench":
        return Prompt(row["goal"], None, True)
    if fmt == "jailbreakbench":
        return Prompt(row["Goal"], _opt(row, "Category"), True)
    if fmt == "harmbench":
        # Contextual behaviours refer to their ContextString ("the text above");
        # HarmBench prompts them as context, separator, behaviour.
        context = _opt(row, "ContextString")
        text = row["Behavior"] if context is None else f"{context}\n\n---\n\n{row['Behavior']}"
        return Prompt(text, _opt(row, "SemanticCategory"), True)
    if fmt == "xstest":
        kind = row["type"].strip()
        return Prompt(row["prompt"], kind or None, kind.startswith("contrast_"))
    raise AssertionError(fmt)  # pragma: no cover - callers pass a known CSV format


def _detect(keys: Sequence[str], name: str, allowed: Sequence[str]) -> str:
    for fmt in allowed:
        if all(col in keys for col in _FORMAT_COLUMNS[fmt]):
            return fmt
    raise PromptFileError(
        f"{name}: cannot tell the format from the columns found ({', '.join(keys) or 'none'}); "
        f"supported: AdvBench CSV (goal), HarmBench CSV (Behavior), JailbreakBench CSV (Goal), "
        f"XSTest CSV (prompt, type), Alpaca JSON (instruction); pass format= or rename the "
        f"columns"
    )


def _check_format(fmt: str, keys: Sequence[str], name: str) -> None:
    needed = [c for c in _FORMAT_COLUMNS[fmt] if c not in keys]
    if needed:
        raise PromptFileError(
            f"{name}: format {fmt!r} needs column(s) {', '.join(needed)}, found "
            f"{', '.join(keys) or 'none'}; pass the right format= or format='auto'"
        )


def _read_csv_prompts(text: str, name: str, fmt: str) -> list[Prompt]:
    columns, rows = _csv_rows(text, name)
    if fmt == "auto":
        fmt = _detect(columns, name, [f for f in _FORMAT_COLUMNS if f != "alpaca"])
    else:
        _check_format(fmt, columns, name)
    text_col = {"advbench": "goal", "jailbreakbench": "Goal", "harmbench": "Behavior"}.get(
        fmt, "prompt"
    )
    prompts = []
    for lineno, row in rows:
        if not row[text_col].strip():
            raise PromptFileError(
                f"{name} line {lineno}: column {text_col} is empty; fill it in or delete the row"
            )
        prompts.append(_prompt_from_row(fmt, row))
    return prompts


def _read_alpaca(text: str, name: str) -> list[Prompt]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptFileError(
            f"{name} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno}); "
            f"Alpaca files are one JSON list of objects"
        ) from None
    if not isinstance(data, list):
        raise PromptFileError(
            f'{name}: expected a JSON list of {{"instruction", "input", "output"}} '
            f"objects, got a {type(data).__name__}"
        )
    if not data:
        raise PromptFileError(f"{name} is an empty list: it has no prompts; add at least one")
    prompts = []
    for i, item in enumerate(data, start=1):
        where = f"{name} entry {i}"
        if not isinstance(item, dict):
            raise PromptFileError(
                f"{where}: expected an object, got {type(item).__name__}; each entry must be "
                f'{{"instruction": ..., "input": ..., "output": ...}}'
            )
        if i == 1:
            _detect(list(item), name, ["alpaca"])
        instruction, extra = item.get("instruction"), item.get("input") or ""
        if not isinstance(instruction, str) or not instruction.strip():
            raise PromptFileError(
                f'{where}: "instruction" is missing or empty; give every entry an instruction'
            )
        if not isinstance(extra, str):
            raise PromptFileError(f'{where}: "input" must be a string, got {type(extra).__name__}')
        # Alpaca's own template shows the input below the instruction.
        text_ = f"{instruction.strip()}\n{extra.strip()}" if extra.strip() else instruction
        prompts.append(Prompt(text_, None, False))
    return prompts


def read_prompts(path: str | Path, *, format: str = "auto") -> list[Prompt]:
    """Read a prompt set in a public format (see the table in the module docstring).

    ``format="auto"`` recognises the format from the CSV header or the JSON
    keys; otherwise pass one of :data:`PUBLIC_FORMATS`.
    """
    if format != "auto" and format not in PUBLIC_FORMATS:
        raise PromptFileError(
            f"unknown format {format!r}; use 'auto' or one of {', '.join(PUBLIC_FORMATS)}"
        )
    p = _check_path(path)
    text = _read_text(p)
    name = str(p)
    _require_not_blank(text, name, "prompts")
    if p.suffix.lower() == ".jsonl":
        # JSONL is this toolkit's pair format, not one of the public prompt formats.
        raise PromptFileError(
            f"{name}: .jsonl files are pair files; read them with read_pairs, or give "
            f"read_prompts a CSV (AdvBench, HarmBench, JailbreakBench, XSTest) or Alpaca JSON"
        )
    is_json = p.suffix.lower() == ".json" or (format == "auto" and text.lstrip()[:1] == "[")
    if format == "alpaca" or (format == "auto" and is_json):
        prompts = _read_alpaca(text, name)
    elif is_json:
        raise PromptFileError(
            f"{name}: format {format!r} is a CSV format but the file is JSON; "
            f"pass format='alpaca' or 'auto', or give the CSV file"
        )
    else:
        prompts = _read_csv_prompts(text, name, format)
    if not prompts:
        raise PromptFileError(f"{name} has a header but no prompts; add one row per prompt")
    return prompts


# --------------------------------------------------------------------------- pairing


def _word_count(text: str) -> int:
    return len(text.split())


def make_pairs(
    harmful: Sequence[Prompt], harmless: Sequence[Prompt], *, seed: int = 0
) -> list[PromptPair]:
    """Pair each harmful prompt with a distinct harmless prompt of the closest word count.

    Greedy, in the order of ``harmful``: each takes the unused harmless prompt
    whose word count is nearest to its own. Ties (and there are many: Alpaca
    has thousands of 8-word instructions) are broken by a shuffle of
    ``harmless`` with ``random.Random(seed)``, so the result is the same for
    the same seed and different seeds give different controls. The pair's
    category is the harmful prompt's. Needs ``len(harmless) >= len(harmful)``.
    """
    if not harmful:
        raise PromptFileError("make_pairs got no harmful prompts; pass at least one")
    if len(harmless) < len(harmful):
        raise PromptFileError(
            f"make_pairs needs at least as many harmless prompts as harmful ones: got "
            f"{len(harmless)} harmless for {len(harmful)} harmful; add harmless prompts "
            f"(e.g. more Alpaca rows) or use fewer harmful ones"
        )
    for label, prompts, bad in (("harmful", harmful, False), ("harmless", harmless, True)):
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, Prompt):
                raise PromptFileError(
                    f"{label}[{i}] is a {type(prompt).__name__}, not a Prompt; "
                    f"read files with read_prompts or build Prompt(text)"
                )
            if prompt.harmful is bad:
                raise PromptFileError(
                    f"{label}[{i}] is marked harmful={prompt.harmful} ({prompt.text[:40]!r}); "
                    f"split mixed sets (e.g. XSTest) on Prompt.harmful first"
                )

    order = list(range(len(harmless)))
    random.Random(seed).shuffle(order)
    # Buckets by word count, each in shuffled order, so the next candidate of a
    # given length is O(1) and the search only widens over lengths.
    buckets: dict[int, deque[int]] = {}
    for idx in order:
        buckets.setdefault(_word_count(harmless[idx].text), deque()).append(idx)
    rank = {idx: r for r, idx in enumerate(order)}
    max_len = max(buckets)

    pairs = []
    for prompt in harmful:
        target = _word_count(prompt.text)
        for dist in range(max(target, max_len) + 1):
            heads = [buckets[wc][0] for wc in {target - dist, target + dist} if buckets.get(wc)]
            if heads:
                best = min(heads, key=rank.__getitem__)
                buckets[_word_count(harmless[best].text)].popleft()
                pairs.append(PromptPair(prompt.text, harmless[best].text, prompt.category))
                break
    return pairs
