"""docs/format.md is the repository's copy of the format contract: the same text, to the byte, as
the shared FORMAT.md beside the checkout, so that a reader of either reads the one contract."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FORMAT = REPO.parent / "shared" / "FORMAT.md"


@pytest.mark.skipif(not SHARED_FORMAT.is_file(), reason=f"{SHARED_FORMAT} is not beside this checkout")
def test_docs_format_is_a_verbatim_copy_of_the_shared_contract():
    ours = (REPO / "docs" / "format.md").read_bytes()
    assert ours == SHARED_FORMAT.read_bytes(), (
        f"docs/format.md differs from {SHARED_FORMAT}: copy it over (cp {SHARED_FORMAT} docs/format.md)")
