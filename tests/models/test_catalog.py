"""The torch-free model catalog (``cadmr models``) agrees with the registry."""

from __future__ import annotations

import subprocess
import sys

from cadmr.catalog import CATALOG, summaries
from cadmr.models import MODELS


def test_catalog_names_the_registered_classes():
    assert list(CATALOG) == list(MODELS)
    for name, cls in MODELS.items():
        assert CATALOG[name] == (cls.__module__, cls.__name__)


def test_summaries_are_what_the_classes_say():
    for name, line in summaries().items():
        cls = MODELS[name]
        expected = cls.summary or (sys.modules[cls.__module__].__doc__ or "").strip()
        assert line == expected.splitlines()[0]


def test_listing_models_does_not_import_torch():
    code = "import sys; from cadmr.cli import main; main(['models']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
