"""String normalisation shared by indexing and querying.

Elasticsearch here has no ``asciifolding`` filter, so the case/accent folding the FHIR
``string`` search requires ("after both have been normalized by case and accent") is done in
Python, with the *same* function on stored values and on query values.  Any change to this
function changes the index content: bump ``search.extract.EXTRACTION_VERSION`` so the
fingerprint changes and a reindex is triggered.
"""

from __future__ import annotations

import unicodedata

#: Longest normalised string kept in a keyword field (Lucene terms are capped at 32766 bytes;
#: 4 UTF-8 bytes per char at most).  Longer values are truncated, which keeps prefix search
#: correct for any query shorter than this.
MAX_KEYWORD_CHARS = 4096


def _strip_marks(s: str) -> str:
    return "".join(c for c in s if not unicodedata.combining(c))


def normalize_string(s: str) -> str:
    """Fold case and accents and collapse whitespace: ``"  Hélène\\tDUPONT "`` -> ``"helene dupont"``.

    NFKD splits letters from their accents (and compatibility forms such as ligatures into
    plain letters); combining marks are dropped; ``casefold`` is applied before and after the
    decomposition because it can itself produce combining marks (``İ`` -> ``i̇``).
    """
    s = unicodedata.normalize("NFKD", s).casefold()
    s = _strip_marks(unicodedata.normalize("NFKD", s))
    return " ".join(s.split())


def normalize_exact(s: str) -> str:
    """Canonical form for ``:exact`` matching: case and accents kept, only NFC applied.

    NFC makes a decomposed ``e + U+0301`` equal to a precomposed ``é``: they are the same
    text for a human, so ``:exact`` should not distinguish them.
    """
    return unicodedata.normalize("NFC", s)
