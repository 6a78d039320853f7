from fhir_server.storage.migrations import main

main()
