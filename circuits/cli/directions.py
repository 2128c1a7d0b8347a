"""``refusal-circuits directions``: harmfulness vs refusal directions, steering, jailbreaks."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.cli.common import (
    HelpFormatter,
    add_batch_size_arg,
    add_gen_tokens_arg,
    add_model_args,
    check_count,
    print_lines,
    print_written,
)
from patching.errors import OptionError

if TYPE_CHECKING:
    from attribution.directions import Directions
    from circuits.directions import JailbreakShift, SteeringResult
    from patching.model import HookedModel

# Mirrored from the library so the parser imports no torch (held equal by the tests).
FORMS = ("two_set", "four_cluster")  # attribution.directions.Form
WHERE = ("prompt", "every_step")  # circuits.directions.WHERE
MAX_ALPHA = 20.0  # circuits.directions.MAX_ALPHA
DEFAULT_MIN_PER_CLUSTER = 4  # attribution.directions.DEFAULT_MIN_PER_CLUSTER
DEFAULT_ALPHAS = (0.0, 0.5, 1.0, 2.0)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "directions",
        help="harmfulness (t_inst) vs refusal (t_post_inst) directions, steering, jailbreaks",
        description=(
            "Per-layer difference-of-means directions of the residual stream, harmful minus "
            "harmless, at t_inst (harmfulness) and t_post_inst (refusal), their cosine and "
            "norms; steering harmless prompts along each (alpha x the raw direction at a "
            "block's input) with the refusal score, the judged behaviour and the "
            "reply-inversion answer; plain vs jailbreak-framed harmful requests as harmfulness "
            "vs refusal scores. Writes DIR/directions.json, DIR/report.html and DIR/run.json; "
            "finished steps are kept under DIR/steps and reused by a rerun."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument(
        "--form",
        default="two_set",
        choices=FORMS,
        help="two_set: both directions harmful minus harmless; four_cluster: refusal = "
        "refused minus complied by the model's own judged behaviour (framed harmful prompts "
        "join the harmful set)",
    )
    parser.add_argument(
        "--min-per-cluster",
        type=int,
        default=DEFAULT_MIN_PER_CLUSTER,
        help="fewest prompts a direction's mean is taken over",
    )
    parser.add_argument(
        "--steer-layers",
        type=int,
        nargs="+",
        default=None,
        help="blocks to steer at (default: a quarter, half and three quarters of the depth)",
    )
    parser.add_argument(
        "--causal-layer",
        type=int,
        default=None,
        help="block of the causal-test figure (default: the middle steered layer)",
    )
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=list(DEFAULT_ALPHAS),
        help=f"multiples of the raw direction to add (|alpha| <= {MAX_ALPHA:g})",
    )
    parser.add_argument(
        "--where",
        default="prompt",
        choices=WHERE,
        help="steer the prompt positions only (prompt) or every generated position too",
    )
    add_gen_tokens_arg(parser, 8, "greedy tokens judged")
    add_batch_size_arg(parser)
    parser.add_argument(
        "--framing",
        default=None,
        help="jailbreak framing with {request} (default: the organism's jailbreak variant, "
        "else a fiction framing)",
    )
    parser.set_defaults(handler=run)


def check_options(args: argparse.Namespace) -> None:
    """Option values, before the model loads."""
    check_count(args.min_per_cluster, "--min-per-cluster", "the minimum per cluster")
    wild = [a for a in args.alphas if not math.isfinite(a) or abs(a) > MAX_ALPHA]
    if wild:
        raise OptionError(
            f"--alphas {' '.join(map(str, wild))} out of range; use values in ±{MAX_ALPHA:g}"
        )
    if args.framing is not None and "{request}" not in args.framing:
        raise OptionError("--framing must contain {request} where the harmful request goes")


def steer_layers(args: argparse.Namespace, n_layers: int) -> tuple[list[int], int]:
    """The layers to steer and the causal-test layer, checked against the model."""
    layers = args.steer_layers or sorted({n_layers // 4, n_layers // 2, (3 * n_layers) // 4})
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise OptionError(
            f"--steer-layers {' '.join(map(str, bad))} outside this model's blocks "
            f"0..{n_layers - 1}; pick blocks in range"
        )
    causal = args.causal_layer if args.causal_layer is not None else layers[len(layers) // 2]
    if causal not in layers:
        raise OptionError(f"--causal-layer {causal} is not steered; add it to --steer-layers")
    return layers, causal


def summary_lines(
    directions: Directions,
    steering: dict[str, SteeringResult],
    shift: JailbreakShift,
    causal: int,
) -> list[str]:
    cos = directions.cosine()
    i = directions.layers.index(causal)
    sizes = ", ".join(f"{k} {v}" for k, v in directions.cluster_sizes.items())
    lines = [
        f"Directions ({directions.form.replace('_', '-')}; {sizes}): cosine(harmfulness, "
        f"refusal) at L{causal} {cos[i]:+.2f}; over layers "
        + ", ".join(f"{lab} {c:+.2f}" for lab, c in zip(directions.labels, cos, strict=True))
        + ".",
    ]
    for which, result in steering.items():
        j = result.layers.index(causal)
        rates = ", ".join(
            f"a={a:g}: {r:.0%}"
            for a, r in zip(result.alphas, result.refusal_rate()[j], strict=True)
        )
        inv = result.inversion_rate()
        inv_text = ""
        if inv is not None:
            inv_text = "; answers harmful " + ", ".join(
                f"a={a:g}: {r:.0%}" for a, r in zip(result.alphas, inv[j], strict=True)
            )
        lines.append(
            f"Harmless prompts steered along {which} at L{causal} ({result.where} positions): "
            f"refusal rate {rates}{inv_text}."
        )
    ci = shift.to_dict()
    lines.append(
        f"Jailbreak framing: harmfulness score shifts {shift.shift('harmfulness'):+.2f} "
        f"[{ci['harmfulness_shift_ci'][0]:+.2f}, {ci['harmfulness_shift_ci'][1]:+.2f}] "
        f"(residual units, L{shift.layer}), refusal score {shift.shift('refusal'):+.2f} "
        f"[{ci['refusal_shift_ci'][0]:+.2f}, {ci['refusal_shift_ci'][1]:+.2f}] (log-odds)."
    )
    return lines


def write_outputs(
    out: Path,
    directions: Directions,
    steering: dict[str, SteeringResult],
    shift: JailbreakShift,
    causal: int,
    run: dict[str, Any] | None = None,
) -> list[Path]:
    """``directions.json`` (with the run record under ``"run"``) and ``report.html``."""
    from circuits.direction_views import (
        causal_figure,
        cosine_norm_figure,
        jailbreak_scatter,
        steering_figure,
    )
    from circuits.views import write_outputs as write_json_and_report

    data: dict[str, Any] = {
        "directions": directions.to_dict(),
        "steering": {which: r.to_dict() for which, r in steering.items()},
        "causal_layer": causal,
        "jailbreak": shift.to_dict(),
    }
    figures = [
        cosine_norm_figure(directions),
        causal_figure(steering["harmfulness"], steering["refusal"], causal),
        *(steering_figure(r) for r in steering.values()),
        jailbreak_scatter(shift),
    ]
    return write_json_and_report(
        data,
        out,
        "directions",
        "Harmfulness and refusal directions",
        figures,
        summary=summary_lines(directions, steering, shift, causal),
        run=run,
    )


def _framed(args: argparse.Namespace, organism: Path | None, harmful: list[str]) -> list[str]:
    """Framed versions of the harmful requests, in the same order.

    Pairs read from an organism's ``pairs.jsonl`` (the default for the organism, or
    ``--pairs DIR/pairs.jsonl``) take the framed twins in ``pairs_jailbreak.jsonl`` beside
    it; any other pairs, or ``--framing``, get the framing template.
    """
    from circuits.directions import JAILBREAK_TEMPLATE
    from patching.prompts import read_pairs

    source = Path(args.pairs) if args.pairs is not None else None
    if source is None and organism is not None:
        source = organism / "pairs.jsonl"
    twins = source.with_name("pairs_jailbreak.jsonl") if source is not None else None
    organism_pairs = source is not None and source.name == "pairs.jsonl"
    if args.framing is None and organism_pairs and twins is not None and twins.is_file():
        seed = args.seed if args.sample else None
        return [p.harmful for p in read_pairs(twins, n=args.n, seed=seed)]
    template = args.framing or JAILBREAK_TEMPLATE
    return [template.format(request=text[:1].lower() + text[1:]) for text in harmful]


def _inversion(model: HookedModel, args: argparse.Namespace, organism: Path | None) -> Any:
    """The reply-inversion question: an organism's own (its ground truth) or the paper's;
    ``None`` when the tokenizer lacks the answer words."""
    from circuits.directions import Inversion
    from circuits.organism import load_ground_truth

    directory = organism if organism is not None else Path(args.model)
    inversion = Inversion()
    if (directory / "ground_truth.json").is_file():
        beliefs = load_ground_truth(directory).beliefs
        if beliefs is not None:
            inversion = Inversion(
                beliefs.inversion_question, beliefs.inversion_yes, beliefs.inversion_no
            )
    try:
        inversion.token_ids(model)
    except ValueError:
        return None
    return inversion


def run(args: argparse.Namespace) -> int:
    from attribution.directions import WHICH, Directions, Which, extract_directions
    from circuits.cli.inputs import prepare
    from circuits.directions import (
        JailbreakShift,
        SteeringResult,
        four_cluster_directions,
        jailbreak_shift,
        steer,
    )
    from circuits.store import StepStore
    from patching.chat import format_chat
    from patching.fingerprint import fingerprint

    check_options(args)
    prepared = prepare(args)
    model, pairs, out = prepared.model, prepared.pairs, prepared.out
    layers, causal = steer_layers(args, model.n_layers)
    print_lines(prepared.header())
    progress = not args.quiet
    harmful_text = [p.harmful for p in pairs]
    framed_text = _framed(args, prepared.organism, harmful_text)
    chat = lambda texts: [format_chat(model.tokenizer, t) for t in texts]  # noqa: E731
    harmful, harmless, framed = (
        chat(harmful_text),
        chat([p.control for p in pairs]),
        chat(framed_text),
    )
    inversion = _inversion(model, args, prepared.organism)
    store = StepStore(out, context=fingerprint(model))
    base = {"harmful": harmful_text, "harmless": [p.control for p in pairs], "framed": framed_text}

    def compute_directions() -> dict[str, Any]:
        if args.form == "four_cluster":
            return four_cluster_directions(
                model,
                [*harmful, *framed],
                harmless,
                n_tokens=args.gen_tokens,
                min_per_cluster=args.min_per_cluster,
                batch_size=args.batch_size,
                progress=progress,
            ).to_dict()
        return extract_directions(
            model,
            harmful,
            harmless,
            min_per_cluster=args.min_per_cluster,
            batch_size=args.batch_size,
            progress=progress,
        ).to_dict()

    dir_deps = {**base, "form": args.form, "min": args.min_per_cluster, "gen": args.gen_tokens}
    directions = Directions.from_dict(store.step("directions", dir_deps, compute_directions))
    steering: dict[str, SteeringResult] = {}
    which: Which
    for which in WHICH:

        def compute_steering(which: Which = which) -> dict[str, Any]:
            return steer(
                model,
                harmless,
                directions,
                which,
                layers,
                args.alphas,
                where=args.where,
                n_tokens=args.gen_tokens,
                inversion=inversion,
                batch_size=args.batch_size,
                progress=progress,
            ).to_dict()

        deps = {**dir_deps, "which": which, "layers": layers, "alphas": args.alphas,
                "where": args.where, "inversion": inversion is not None}  # fmt: skip
        steering[which] = SteeringResult.from_dict(
            store.step(f"steer-{which}", deps, compute_steering)
        )
    # The four-cluster harmful set holds the framed prompts: projecting them onto a
    # direction they helped define would shift them by construction. The shift reads a
    # harmfulness direction fitted on the plain harmful and harmless prompts only.
    plain_directions = directions
    if args.form == "four_cluster":
        plain_directions = Directions.from_dict(
            store.step(
                "plain-directions",
                {**base, "layer": causal, "min": args.min_per_cluster},
                lambda: extract_directions(
                    model,
                    harmful,
                    harmless,
                    [causal],
                    min_per_cluster=args.min_per_cluster,
                    batch_size=args.batch_size,
                ).to_dict(),
            )
        )
    shift = JailbreakShift.from_dict(
        store.step(
            "jailbreak",
            {**dir_deps, "layer": causal, "plain_direction": True},
            lambda: jailbreak_shift(
                model,
                harmful,
                framed,
                plain_directions,
                causal,
                framing=args.framing or "",
                batch_size=args.batch_size,
            ).to_dict(),
        )
    )
    print_lines([*store.notes(), *summary_lines(directions, steering, shift, causal)])
    if inversion is None:
        print("the tokenizer has no 'Certainly'/'No' tokens: the reply-inversion panel is empty")
    print_written(write_outputs(out, directions, steering, shift, causal, run=prepared.run))
    return 0
