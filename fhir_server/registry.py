"""The resource types this server holds and the interactions each supports.

Adding a type (``Binary``, ``List``) is one entry here; routes, the
CapabilityStatement and the index are all driven by this table.
"""

from __future__ import annotations

from dataclasses import dataclass

INSTANCE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance")
TYPE_INTERACTIONS = ("create", "search-type", "history-type")


@dataclass(frozen=True)
class ResourceType:
    name: str
    interactions: tuple[str, ...] = INSTANCE_INTERACTIONS + TYPE_INTERACTIONS
    searchable: bool = True  # indexed in Elasticsearch
    documentation: str = ""

    @property
    def profile(self) -> str:
        return f"http://hl7.org/fhir/StructureDefinition/{self.name}"

    def supports(self, interaction: str) -> bool:
        return interaction in self.interactions


RESOURCE_TYPES: dict[str, ResourceType] = {
    rt.name: rt
    for rt in (
        ResourceType("Patient", documentation="Patient identities (FR Core Patient / INS)."),
        ResourceType("DocumentReference", documentation="Shared documents (IHE MHD / ANS PDSm)."),
        ResourceType("Immunization", documentation="Vaccinations (FR Core Immunization)."),
        ResourceType("List", documentation="IHE MHD SubmissionSet and Folder (ANS PDSm)."),
        ResourceType("Binary", interactions=("read", "vread", "update", "delete", "history-instance", "create"),
                     searchable=False,
                     documentation="Document content (ITI-68 retrieve: raw bytes unless a FHIR format is asked)."),
        ResourceType("AuditEvent", interactions=("read", "vread", "search-type"), searchable=False,
                     documentation="Access trace (IHE BALP), written by the server only (fhir_server/audit); "
                                   "read and searched in its own SQL table, not Elasticsearch."),
        ResourceType("Consent", documentation="A patient's opposition to access by a practitioner or organisation "
                                              "(deny provision naming the actor), enforced on every path."),
    )
}


def get_type(name: str) -> ResourceType | None:
    return RESOURCE_TYPES.get(name)
