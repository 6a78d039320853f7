"""Leaf helpers shared by ``fhir_server``, ``profiles`` and ``search``.

Layering rule: this package imports only the standard library and third-party libraries, never ``fhir_server``,
``profiles`` or ``search``, so each of them may import it (``search`` and ``profiles`` never import
``fhir_server``). What lives here is what two of them must do the same way:

* :mod:`.fhirpath` - the one FHIRPath adapter (fhirpathpy, serialised: it keeps module state).
"""
