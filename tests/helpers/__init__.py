"""Shared test helpers: tiny models, the organism's fixtures, identities, the browser driver."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root."""
DATA = ROOT / "tests" / "data"
"""Sample prompt files in every supported format."""
