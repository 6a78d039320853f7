"""Authentication (SMART on FHIR bearer tokens), scopes, and the development issuer."""
