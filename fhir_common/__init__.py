"""Leaf helpers shared by ``fhir_server``, ``profiles`` and ``search``.

Layering rule: this package imports only the standard library and third-party libraries, never ``fhir_server``,
``profiles`` or ``search``, so each of them may import it (``search`` and ``profiles`` never import
``fhir_server``; ``tests/test_layering.py`` checks it). What lives here is what two of them must do the same way:

* :mod:`.fhirpath` - the one FHIRPath adapter (fhirpathpy, serialised: it keeps module state);
* :mod:`.safexml` - the hardened expat parser (no DTD, no entity);
* :mod:`.narrative` - the narrative ``div`` checker, on that parser, for the validator and the XML writer.
* :mod:`.outcome` - the OperationOutcome ``Issue`` the validator reports and the server's errors carry;
* :mod:`.types` - named aliases (``Resource``, ``SearchParams``, ``EsQuery``) for the JSON every layer passes.
"""
