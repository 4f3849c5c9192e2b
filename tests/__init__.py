"""The package's tests, in folders that mirror the package's (layers/, models/, tasks/<task>/,
training/, export/) and serve/; helpers for several of them sit here."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
# The development material beside the checkout (a real corpus); tests that read it skip without it.
SHARED = ROOT.parent / "shared"
MULTI30K = SHARED / "data" / "multi30k-en-fr"
