"""Differential test of our validator against the official HL7 validator (org.hl7.fhir.validation), offline.

Not part of CI and nothing of it lands in the repository: it sets the HL7 validator up under
``~/.cache/fhir-server/hl7-validator`` (override with ``HL7_VALIDATOR_HOME``) and compares verdicts.

Set-up (``--setup``, idempotent; needs Maven Central and the npm registry once, then runs offline):

- ``mvn dependency:copy-dependencies`` of ``ca.uhn.hapi.fhir:org.hl7.fhir.validation`` (pinned version) plus the
  optional dependencies the engine needs at run time (ucum, okhttp, ST4...); ``fhir-test-cases`` is excluded
  (it lives outside Maven Central). The validator CLI jar is not on Maven Central, so a small Java driver
  (below) runs ``ValidationEngine`` on many files in one JVM.
- The FHIR package cache ``~/.fhir/packages``: ``hl7.fhir.r4.core#4.0.1`` is not published on npm, so it is
  rebuilt from the conformance resources of ``hl7.fhir.r4.examples@4.0.1`` (same spec build, every
  StructureDefinition with its snapshot, ValueSet, CodeSystem...); ``hl7.fhir.xver-extensions#0.1.0`` (which the
  engine loads for R4) comes from npm as is. No terminology server (``withNoTerminologyServer``): value sets are
  expanded locally, as ours are.

Comparison: each case of the corpus (R4 spec examples of the served types, the French examples, systematic
mutations of them, see ``corpus()``) is validated by both; the verdict is "has an error". The HL7 validator
resolves references through a fetcher we do not have, so its "Unable to resolve resource with reference"
errors are dropped (our server never resolves references at validation either). Only base R4 is compared: the
French IG packages are not reachable (our profile rules are transcriptions, see profile.py).

    .venv/bin/python profiles/tools/compare_hl7.py --setup
    .venv/bin/python profiles/tools/compare_hl7.py [--show 20] [-k FILTER]

Last run (org.hl7.fhir.validation 6.9.4, example URLs allowed): 3,490 cases, 3,461 agreements (99.2%). The 29
disagreements: 11 examples whose extensions/code systems come from IGs the oracle has not loaded (FR Core, MHD,
US Core, Synthea); 4 Bundles whose entries are types outside the vendored definitions (their bindings and
in-document references are not checked here); 2 need a terminology server (language tag registry, display names);
7 MIME types (bcp:13: without a terminology server the oracle's verdicts are unstable, run alone it rejects even
application/pdf); 4 empty birthDate beside a ``_birthDate`` extension and 1 non-base64 Binary.data (the oracle
lets both pass; the spec does not).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
HOME = Path(os.environ.get("HL7_VALIDATOR_HOME", Path.home() / ".cache" / "fhir-server" / "hl7-validator"))
PACKAGES = Path.home() / ".fhir" / "packages"
VERSION = "6.9.4"  # org.hl7.fhir.validation
TYPES = ("Patient", "DocumentReference", "Immunization", "Binary", "List", "Bundle", "OperationOutcome", "Consent")
_OPTIONAL = [("org.fhir", "ucum", "1.0.10"), ("com.squareup.okhttp3", "okhttp-jvm", "5.3.2"),
             ("com.squareup.okio", "okio-jvm", "3.16.4"), ("com.github.rjeschke", "txtmark", "0.13"),
             ("org.antlr", "ST4", "4.1"), ("org.slf4j", "slf4j-nop", "2.0.16")]
_CONFORMANCE = {"StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap", "SearchParameter",
                "OperationDefinition", "CompartmentDefinition", "NamingSystem", "CapabilityStatement",
                "StructureMap", "ImplementationGuide"}
IGNORED = ("Unable to resolve resource with reference",)

DRIVER = r"""
import java.nio.file.*;
import java.util.*;
import org.hl7.fhir.validation.ValidationEngine;
import org.hl7.fhir.validation.service.model.InstanceValidatorParameters;
import org.hl7.fhir.r5.elementmodel.Manager.FhirFormat;
import org.hl7.fhir.r5.model.OperationOutcome;
import org.hl7.fhir.utilities.validation.ValidationMessage;

/** Validates every file named on stdin (one per line) against R4 core; one JSON line per file on stdout. */
public class Oracle {
  public static void main(String[] a) throws Exception {
    InstanceValidatorParameters params = new InstanceValidatorParameters();
    params.setAllowExampleUrls(true);
    ValidationEngine ve = new ValidationEngine.ValidationEngineBuilder().withVersion("4.0.1")
        .withDefaultInstanceValidatorParameters(params).withNoTerminologyServer().withCanRunWithoutTerminologyServer(true).fromSource("hl7.fhir.r4.core#4.0.1");
    ve.setAllowExampleUrls(true);
    for (String pkg : a) ve.loadPackage(pkg, null);
    Scanner in = new Scanner(System.in);
    while (in.hasNextLine()) {
      String f = in.nextLine().trim();
      if (f.isEmpty()) continue;
      StringBuilder out = new StringBuilder("{\"file\":").append(q(f)).append(",\"issues\":[");
      try {
        OperationOutcome oo = ve.validate(Files.readAllBytes(Paths.get(f)), FhirFormat.JSON, new ArrayList<>(),
                                          new ArrayList<ValidationMessage>());
        boolean first = true;
        for (OperationOutcome.OperationOutcomeIssueComponent i : oo.getIssue()) {
          if (!first) out.append(",");
          first = false;
          String expr = i.getExpression().isEmpty() ? "" : i.getExpression().get(0).getValue();
          out.append("{\"severity\":").append(q(i.getSeverity().toCode())).append(",\"code\":")
             .append(q(i.getCode().toCode())).append(",\"expression\":").append(q(expr))
             .append(",\"message\":").append(q(i.getDetails().getText())).append("}");
        }
      } catch (Exception e) {
        out.append("{\"severity\":\"fatal\",\"code\":\"exception\",\"expression\":\"\",\"message\":")
           .append(q(String.valueOf(e))).append("}");
      }
      System.out.println(out.append("]}"));
      System.out.flush();
    }
  }
  static String q(String s) {
    if (s == null) return "null";
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }
}
"""


# -- set-up -----------------------------------------------------------------------------------------------------
def _pom() -> str:
    extra = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
                    "</dependency>" for g, a, v in _OPTIONAL)
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>local</groupId><artifactId>hl7-oracle</artifactId><version>1</version><dependencies>
<dependency><groupId>ca.uhn.hapi.fhir</groupId><artifactId>org.hl7.fhir.validation</artifactId>
<version>{VERSION}</version><exclusions><exclusion><groupId>org.hl7.fhir.testcases</groupId>
<artifactId>fhir-test-cases</artifactId></exclusion></exclusions></dependency>{extra}</dependencies></project>"""


def _npm_package(name: str, version: str) -> Path:
    tgz = HOME / "npm" / f"{name}-{version}.tgz"
    if not tgz.exists():
        tgz.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", f"{name}@{version}"], cwd=tgz.parent, check=True, capture_output=True)
    return tgz


def _install_r4_core() -> None:
    dst = PACKAGES / "hl7.fhir.r4.core#4.0.1" / "package"
    if (dst / ".index.json").exists():
        return
    dst.mkdir(parents=True, exist_ok=True)
    files = []
    with tarfile.open(_npm_package("hl7.fhir.r4.examples", "4.0.1")) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not name.endswith(".json") or name.split("-")[0] not in _CONFORMANCE:
                continue
            extracted = tar.extractfile(member)
            if extracted is None:  # not a regular file (checked above)
                continue
            raw = extracted.read()
            res = json.loads(raw)
            if res.get("resourceType") not in _CONFORMANCE:
                continue
            (dst / name).write_bytes(raw)
            files.append({k: res.get(k) for k in ("resourceType", "id", "url", "version", "kind", "type")}
                         | {"filename": name})
    (dst / "package.json").write_text(json.dumps({
        "name": "hl7.fhir.r4.core", "version": "4.0.1", "fhirVersions": ["4.0.1"], "type": "Core",
        "license": "CC0-1.0", "canonical": "http://hl7.org/fhir", "url": "http://hl7.org/fhir/R4",
        "dependencies": {}}))
    (dst / ".index.json").write_text(json.dumps({"index-version": 1, "files": files}))


def _install_npm(name: str, version: str) -> None:
    dst = PACKAGES / f"{name}#{version}"
    if (dst / "package" / "package.json").exists():
        return
    dst.mkdir(parents=True, exist_ok=True)
    with tarfile.open(_npm_package(name, version)) as tar:
        tar.extractall(dst, filter="data")


def setup() -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    lib = HOME / "lib"
    if not (lib / f"org.hl7.fhir.validation-{VERSION}.jar").exists():
        (HOME / "pom.xml").write_text(_pom())
        subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
                       cwd=HOME, check=True)
    _install_r4_core()
    _install_npm("hl7.fhir.xver-extensions", "0.1.0")
    if not (HOME / "Oracle.class").exists() or (HOME / "Oracle.java").read_text() != DRIVER:
        (HOME / "Oracle.java").write_text(DRIVER)
        subprocess.run(["javac", "-nowarn", "-cp", f"{lib}/*", "Oracle.java"], cwd=HOME, check=True,
                       capture_output=True)


def oracle(files: list[Path]) -> dict[str, list[dict[str, str]]]:
    """The HL7 validator's issues per file (one JVM for the whole corpus)."""
    proc = subprocess.run(["java", "-Xmx3g", "-cp", f"{HOME / 'lib'}/*:{HOME}", "Oracle"],
                          input="\n".join(str(f) for f in files), capture_output=True, text=True, check=True)
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            out[row["file"]] = [i for i in row["issues"] if not i["message"].startswith(IGNORED)]
    return out


# -- corpus -----------------------------------------------------------------------------------------------------
Mutation = Callable[[dict[str, Any]], Any]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _examples() -> list[tuple[str, dict[str, Any]]]:
    out = [(p.stem, _load(p)) for t in TYPES for p in sorted((SHARED / "r4-examples").glob(f"{t}-*.json"))]
    fr = SHARED / "fr"
    for rel in ("frcore/Patient-FRCorePatientExample.json", "frcore/Immunization-FRCoreImmunizationExample.json",
                "doccore/Patient-ba499de3-aeae-43c3-82cb-0ba2718cfa41.json",
                "pdsm-published-json/DocumentReference-exemple-pdsm-documentreference.json",
                "pdsm-published-json/DocumentReference-PDSmSimplifiedExample.json",
                "pdsm-published-json/List-ExampleFolder.json", "pdsm-published-json/List-ExampleSubmissionSet.json",
                "pdsm-published-json/Patient-fr-patient-123.json"):
        if (fr / rel).exists():
            out.append(("fr-" + Path(rel).stem, _load(fr / rel)))
    for t in ("Patient", "Immunization", "DocumentReference"):
        f = SHARED / "synthea" / "10-patients" / f"{t}.000.ndjson"
        if f.exists():
            lines = [x for x in f.read_text().splitlines() if x.strip()][:3]
            out.extend((f"synthea-{t}-{i}", json.loads(x)) for i, x in enumerate(lines))
    return out


def _set(path: str, value: Any) -> Mutation:
    """Set a dotted path (list indexes as numbers) to ``value``; ``...`` deletes it."""
    def fn(r: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        cur: Any = r
        for p in parents:
            cur = cur[int(p)] if p.isdigit() else cur.setdefault(p, {})
        key: Any = int(last) if last.isdigit() else last
        if value is ...:
            del cur[key]
        else:
            cur[key] = copy.deepcopy(value)
    return fn


def _targeted() -> list[tuple[str, str, Mutation]]:
    """(base example, what, mutation): the rules a generic mutation does not reach."""
    p, d, im, ls, b = "Patient-example", "DocumentReference-example", "Immunization-example", "List-example", \
        "Bundle-bundle-example"
    ext = "http://hl7.org/fhir/StructureDefinition/"
    return [
        (p, "date month 13", _set("birthDate", "2020-13-01")),
        (p, "date 31 February", _set("birthDate", "2021-02-31")),
        (p, "date with time", _set("birthDate", "2020-01-01T10:00:00Z")),
        (p, "dateTime without zone", _set("deceasedDateTime", "2020-01-01T10:00:00")),
        (p, "dateTime without seconds", _set("deceasedDateTime", "2020-01-01T10:00Z")),
        (p, "dateTime hour only", _set("deceasedDateTime", "2020-01-01T10Z")),
        (p, "dateTime year only", _set("deceasedDateTime", "2020")),
        (p, "two deceased types", _set("deceasedDateTime", "2020")),
        (p, "unknown choice type", _set("deceasedString", "yes")),
        (p, "id too long", _set("id", "a" * 65)),
        (p, "id 64 chars", _set("id", "a" * 64)),
        (p, "id underscore", _set("id", "a_b")),
        (p, "empty string", _set("name.0.family", "")),
        (p, "whitespace-only string", _set("name.0.family", "   ")),
        (p, "leading whitespace", _set("name.0.family", " Chalmers")),
        (p, "string with tab", _set("name.0.family", "Chal\tmers")),
        (p, "code with double space", _set("gender", "male  x")),
        (p, "gender wrong code", _set("gender", "M")),
        (p, "gender upper case", _set("gender", "Male")),
        (p, "boolean as string", _set("active", "true")),
        (p, "integer as string", _set("multipleBirthInteger", "2")),
        (p, "integer float", _set("multipleBirthInteger", 2.5)),
        (p, "null value", _set("active", None)),
        (p, "empty object", _set("maritalStatus", {})),
        (p, "empty array", _set("address", [])),
        (p, "array for single", _set("gender", ["male"])),
        (p, "unknown element", _set("foo", 1)),
        (p, "unknown nested element", _set("name.0.foo", "x")),
        (p, "extensible binding wrong code (maritalStatus)",
         _set("maritalStatus", {"coding": [{"system": "http://example.org/x", "code": "zz"}]})),
        (p, "extensible binding, text only", _set("maritalStatus", {"text": "whatever"})),
        (p, "extensible binding known system, bad code",
         _set("maritalStatus", {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                            "code": "ZZZ"}]})),
        (p, "required binding code in wrong system (Coding)",
         _set("telecom.0.system", "fax")),
        (p, "telecom system bad", _set("telecom.0.system", "pager2")),
        (p, "telecom cpt-2 value without system", _set("telecom.0", {"value": "123"})),
        (p, "period end before start", _set("name.0.period", {"start": "2020-01-02", "end": "2020-01-01"})),
        (p, "period end before start dateTime",
         _set("name.0.period", {"start": "2020-01-02T10:00:00Z", "end": "2020-01-02T09:00:00Z"})),
        (p, "contact without details (pat-1)", _set("contact", [{"gender": "male"}])),
        (p, "reference wrong target", _set("managingOrganization", {"reference": "Patient/1"})),
        (p, "reference malformed", _set("managingOrganization", {"reference": "Organization/"})),
        (p, "reference relative bad chars", _set("managingOrganization", {"reference": "Organization/a b"})),
        (p, "reference absolute url", _set("managingOrganization", {"reference": "http://x.org/fhir/Organization/1"})),
        (p, "reference urn:uuid", _set("managingOrganization",
                                        {"reference": "urn:uuid:9d1714da-b7e6-455b-bfd2-69ce0ff5fb12"})),
        (p, "reference type mismatch", _set("managingOrganization", {"reference": "Organization/1",
                                                                     "type": "Patient"})),
        (p, "reference to missing contained", _set("managingOrganization", {"reference": "#nothere"})),
        (p, "reference identifier only", _set("managingOrganization", {"identifier": {"value": "x"}})),
        (p, "reference display only", _set("managingOrganization", {"display": "x"})),
        (p, "contained not referenced (dom-3)",
         _set("contained", [{"resourceType": "Organization", "id": "o1", "name": "x"}])),
        (p, "contained referenced",
         lambda r: r.update(contained=[{"resourceType": "Organization", "id": "o1", "name": "x"}],
                            managingOrganization={"reference": "#o1"})),
        (p, "contained without id", lambda r: r.update(contained=[{"resourceType": "Organization", "name": "x"}])),
        (p, "contained nested (dom-2)",
         lambda r: r.update(contained=[{"resourceType": "Organization", "id": "o1", "name": "x", "contained": [
             {"resourceType": "Organization", "id": "o2", "name": "y"}]}], managingOrganization={"reference": "#o1"})),
        (p, "contained with meta.versionId (dom-4)",
         lambda r: r.update(contained=[{"resourceType": "Organization", "id": "o1", "name": "x",
                                        "meta": {"versionId": "1"}}], managingOrganization={"reference": "#o1"})),
        (p, "contained with text (dom-5? no: text allowed)",
         lambda r: r.update(contained=[{"resourceType": "Organization", "id": "o1", "name": "x",
                                        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/"
                                                 "xhtml\">x</div>"}}], managingOrganization={"reference": "#o1"})),
        (p, "contained unknown resource type",
         lambda r: r.update(contained=[{"resourceType": "Foo", "id": "o1"}], managingOrganization={
             "reference": "#o1"})),
        (p, "narrative script", _set("text.div", "<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>x()</script>"
                                                 "</div>")),
        (p, "narrative onclick", _set("text.div", "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p onclick=\"x()\">"
                                                  "a</p></div>")),
        (p, "narrative no namespace", _set("text.div", "<div><p>a</p></div>")),
        (p, "narrative not div", _set("text.div", "<p xmlns=\"http://www.w3.org/1999/xhtml\">a</p>")),
        (p, "narrative empty div", _set("text.div", "<div xmlns=\"http://www.w3.org/1999/xhtml\"></div>")),
        (p, "narrative malformed", _set("text.div", "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>a</div>")),
        (p, "narrative bad status", _set("text.status", "done")),
        (p, "narrative missing div", lambda r: r.update(text={"status": "generated"})),
        (p, "narrative img data", _set("text.div", "<div xmlns=\"http://www.w3.org/1999/xhtml\"><img src=\"data:"
                                                   "image/png;base64,AAAA\"/></div>")),
        (p, "narrative iframe", _set("text.div", "<div xmlns=\"http://www.w3.org/1999/xhtml\"><iframe src=\"x\">"
                                                 "</iframe></div>")),
        (p, "narrative style attribute", _set("text.div", "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p style="
                                                          "\"color:red\">a</p></div>")),
        (p, "extension unknown hl7 url", _set("extension", [{"url": ext + "patient-nope", "valueString": "x"}])),
        (p, "extension unknown other url", _set("extension", [{"url": "http://example.org/ext", "valueString": "x"}])),
        (p, "extension relative url", _set("extension", [{"url": "nope", "valueString": "x"}])),
        (p, "extension no value no children", _set("extension", [{"url": "http://example.org/ext"}])),
        (p, "extension value and children",
         _set("extension", [{"url": "http://example.org/ext", "valueString": "x",
                             "extension": [{"url": "a", "valueString": "y"}]}])),
        (p, "extension known right context",
         _set("extension", [{"url": ext + "patient-birthPlace", "valueAddress": {"city": "Paris"}}])),
        (p, "extension known wrong value type",
         _set("extension", [{"url": ext + "patient-birthPlace", "valueString": "Paris"}])),
        (p, "extension known wrong context",
         _set("name.0.extension", [{"url": ext + "patient-birthPlace", "valueAddress": {"city": "Paris"}}])),
        (p, "extension known on other resource",
         _set("extension", [{"url": ext + "familymemberhistory-severity",
                             "valueCodeableConcept": {"text": "x"}}])),
        (p, "extension primitive _birthDate",
         _set("_birthDate", {"extension": [{"url": ext + "patient-birthTime", "valueDateTime":
                                            "1974-12-25T14:35:45-05:00"}]})),
        (p, "extension on primitive wrong context",
         _set("_gender", {"extension": [{"url": ext + "patient-birthTime", "valueDateTime":
                                         "1974-12-25T14:35:45-05:00"}]})),
        (p, "companion without value", _set("_active", {"extension": [{"url": "http://example.org/e",
                                                                        "valueBoolean": True}]})),
        (p, "companion empty", _set("_gender", {})),
        (p, "modifierExtension unknown", _set("modifierExtension", [{"url": "http://example.org/mod",
                                                                     "valueBoolean": True}])),
        (p, "modifierExtension known non-modifier",
         _set("modifierExtension", [{"url": ext + "patient-birthPlace", "valueAddress": {"city": "Paris"}}])),
        (p, "complex extension known (nationality)",
         _set("extension", [{"url": ext + "patient-nationality",
                             "extension": [{"url": "code", "valueCodeableConcept": {"text": "FR"}}]}])),
        (p, "complex extension unknown sub",
         _set("extension", [{"url": ext + "patient-nationality",
                             "extension": [{"url": "zz", "valueString": "FR"}]}])),
        (p, "language bad tag", _set("language", "french language")),
        (p, "language unknown tag", _set("language", "zz")),
        (p, "meta.profile unknown", _set("meta", {"profile": ["http://example.org/StructureDefinition/x"]})),
        (p, "meta.lastUpdated no zone", _set("meta", {"lastUpdated": "2020-01-01T10:00:00"})),
        (p, "meta.lastUpdated date only", _set("meta", {"lastUpdated": "2020-01-01"})),
        (p, "meta.security unknown code", _set("meta", {"security": [{"system": "http://example.org", "code":
                                                                      "x"}]})),
        (p, "identifier system not absolute", _set("identifier.0.system", "urn-oid-1")),
        (p, "identifier system urn:oid bad", _set("identifier.0.system", "urn:oid:1.2.a")),
        (p, "identifier system urn:uuid upper", _set("identifier.0.system",
                                                     "urn:uuid:9D1714DA-B7E6-455B-BFD2-69CE0FF5FB12")),
        (p, "uri with space", _set("identifier.0.system", "http://example.org/a b")),
        (p, "coding system not absolute", _set("maritalStatus", {"coding": [{"system": "local", "code": "M"}]})),
        (p, "coding unknown code in known system",
         _set("maritalStatus", {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                            "code": "Q"}]})),
        (p, "coding display wrong",
         _set("maritalStatus", {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                            "code": "M", "display": "Single"}]})),
        (p, "link.other missing", _set("link", [{"type": "seealso"}])),
        (p, "link.type wrong", _set("link", [{"other": {"reference": "Patient/2"}, "type": "sameas"}])),
        (p, "resourceType missing", lambda r: r.pop("resourceType")),
        (p, "resourceType unknown", _set("resourceType", "Patient2")),
        (p, "attachment data without contentType", _set("photo", [{"data": "AAAA"}])),
        (p, "attachment bad base64", _set("photo", [{"contentType": "image/png", "data": "A!!A"}])),
        (p, "attachment bad contentType", _set("photo", [{"contentType": "png", "data": "AAAA"}])),
        (p, "attachment size string", _set("photo", [{"contentType": "image/png", "size": "12"}])),
        (p, "decimal as string", _set("address.0.extension", [{"url": "http://example.org/e",
                                                               "valueDecimal": "1.5"}])),
        (p, "address use wrong", _set("address.0.use", "main")),
        (p, "communication language text only", _set("communication", [{"language": {"text": "French"}}])),
        (p, "generalPractitioner wrong target", _set("generalPractitioner", [{"reference": "Patient/x"}])),
        (d, "status removed", _set("status", ...)),
        (d, "status wrong", _set("status", "final")),
        (d, "docStatus wrong", _set("docStatus", "done")),
        (d, "content removed", _set("content", ...)),
        (d, "content empty", _set("content", [])),
        (d, "attachment without anything", _set("content.0.attachment", {"title": "x"})),
        (d, "relatesTo code wrong", _set("relatesTo", [{"code": "replace", "target": {"reference":
                                                                                      "DocumentReference/x"}}])),
        (d, "date without zone", _set("date", "2020-01-01T10:00:00")),
        (d, "date date-only (instant)", _set("date", "2020-01-01")),
        (d, "securityLabel unknown code", _set("securityLabel", [{"coding": [{"system": "http://example.org",
                                                                             "code": "x"}]}])),
        (d, "subject wrong target", _set("subject", {"reference": "Binary/x"})),
        (d, "format unknown (preferred)", _set("content.0.format", {"system": "http://example.org", "code": "x"})),
        (d, "context.period reversed", _set("context.period", {"start": "2020-02-01", "end": "2020-01-01"})),
        (im, "status wrong", _set("status", "done")),
        (im, "vaccineCode removed", _set("vaccineCode", ...)),
        (im, "patient removed", _set("patient", ...)),
        (im, "occurrence removed", _set("occurrenceDateTime", ...)),
        (im, "occurrence string", lambda r: (r.pop("occurrenceDateTime"), r.update(occurrenceString="last week"))),
        (im, "occurrence integer", lambda r: (r.pop("occurrenceDateTime"), r.update(occurrenceInteger=1))),
        (im, "doseQuantity bad code no system", _set("doseQuantity", {"value": 5, "code": "mL"})),
        (im, "doseQuantity comparator", _set("doseQuantity", {"value": 5, "comparator": "<"})),
        (im, "protocolApplied dose string", _set("protocolApplied", [{"doseNumberString": "one"}])),
        (im, "protocolApplied dose zero", _set("protocolApplied", [{"doseNumberPositiveInt": 0}])),
        (im, "statusReason while completed", _set("statusReason", {"text": "x"})),
        (im, "patient wrong target", _set("patient", {"reference": "Practitioner/x"})),
        (im, "performer.actor missing", _set("performer", [{"function": {"text": "x"}}])),
        (ls, "mode wrong", _set("mode", "list")),
        (ls, "status wrong", _set("status", "done")),
        (ls, "emptyReason with entries (lst-1)", _set("emptyReason", {"text": "x"})),
        (ls, "entry without item", _set("entry", [{"flag": {"text": "x"}}])),
        (ls, "orderedBy unknown code", _set("orderedBy", {"coding": [{"system": "http://terminology.hl7.org/"
                                                                       "CodeSystem/list-order", "code": "zz"}]})),
        (b, "type wrong", _set("type", "collection2")),
        (b, "type removed", _set("type", ...)),
        (b, "total in collection (bdl-1)", lambda r: r.update(type="collection")),
        (b, "entry search in batch (bdl-2)", lambda r: r.update(type="batch")),
        (b, "entry fullUrl mismatch", _set("entry.0.fullUrl", "https://example.com/base/MedicationRequest/9")),
        (b, "entry empty", _set("entry", [{}])),
        (b, "entry resource invalid", _set("entry.0.resource.status", "nope")),
        (b, "entry resource unknown element", _set("entry.0.resource.zz", 1)),
        (b, "timestamp no zone", _set("timestamp", "2020-01-01T10:00:00")),
        (b, "link relation missing", _set("link", [{"url": "http://x"}])),
        ("Binary-example", "contentType removed", _set("contentType", ...)),
        ("Binary-example", "contentType bad", _set("contentType", "pdf")),
        ("Binary-example", "data not base64", _set("data", "%%%")),
        ("Binary-example", "text element (not allowed on Binary)",
         _set("text", {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"})),
        ("OperationOutcome-101", "issue removed", _set("issue", ...)),
        ("OperationOutcome-101", "issue severity wrong", _set("issue.0.severity", "bad")),
        ("OperationOutcome-101", "issue code wrong", _set("issue.0.code", "oops")),
    ]


def _generic(name: str, r: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Root-level mutations, driven by the compiled definitions (the kinds of test_systematic.py)."""
    from profiles.model import definitions

    model = definitions().models.get(r["resourceType"])
    if model is None:
        return
    for node in model.required:
        keys = [k for k in r if model.keys.get(k, (None,))[0] is node]
        if keys:
            m = copy.deepcopy(r)
            for k in keys:
                del m[k]
            yield f"required {node.name} removed", m
    for key, value in r.items():
        entry = model.keys.get(key)
        if entry is None:
            continue
        node, t = entry
        if isinstance(value, str):
            yield f"empty {key}", {**r, key: ""}
            yield f"number for {key}", {**r, key: 42}
            if t == "code" and node.binding is not None and node.binding.strength == "required":
                yield f"wrong code for {key}", {**r, key: "not-a-code"}
        elif isinstance(value, dict) and node.max == 1:
            yield f"empty object {key}", {**r, key: {}}
            yield f"string for {key}", {**r, key: "x"}
        elif isinstance(value, list) and value:
            yield f"empty array {key}", {**r, key: []}


def _nested(name: str, r: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """One level down: in the first item of each complex root element, a required child removed, an unknown child,
    an empty or wrong-typed primitive child, a wrong code in a required binding."""
    from profiles.model import definitions

    defs = definitions()
    model = defs.models.get(r["resourceType"])
    if model is None:
        return
    for key, value in r.items():
        entry = model.keys.get(key)
        if entry is None or entry[1] in ("Resource", "Extension") or defs.is_resource(entry[1]):
            continue
        node, t = entry
        child_model = node.model or defs.models.get(t)
        item = value[0] if isinstance(value, list) and value else value
        if child_model is None or not isinstance(item, dict):
            continue

        def put(new: dict[str, Any], key: str = key, value: Any = value) -> dict[str, Any]:
            return {**r, key: [new, *value[1:]] if isinstance(value, list) else new}

        yield f"{key}: unknown child", put({**item, "zz": "x"})
        for child in child_model.required:
            if child.name in item:
                yield f"{key}: required {child.name} removed", put({k: v for k, v in item.items() if k != child.name})
        for ck, cv in item.items():
            centry = child_model.keys.get(ck)
            if centry is None or not isinstance(cv, str):
                continue
            yield f"{key}.{ck}: empty", put({**item, ck: ""})
            yield f"{key}.{ck}: number", put({**item, ck: 7})
            cnode = centry[0]
            if centry[1] == "code" and cnode.binding is not None and cnode.binding.strength == "required":
                yield f"{key}.{ck}: wrong code", put({**item, ck: "not-a-code"})


def corpus() -> list[tuple[str, dict[str, Any]]]:
    examples = _examples()
    by_name = dict(examples)
    cases = [(f"{n}: as is", r) for n, r in examples]
    for base, what, fn in _targeted():
        if base in by_name:
            m = copy.deepcopy(by_name[base])
            fn(m)
            cases.append((f"{base}: {what}", m))
    for n, r in examples:
        if not n.startswith("synthea"):
            cases.extend((f"{n}: {what}", m) for what, m in _generic(n, r))
            cases.extend((f"{n}: {what}", m) for what, m in _nested(n, r))
    return cases


# -- comparison -------------------------------------------------------------------------------------------------
def ours(resource: dict[str, Any]) -> list[dict[str, str]]:
    from profiles import _validator

    return [{"severity": i.severity, "code": i.code, "expression": ",".join(i.expression),
             "message": i.diagnostics} for i in _validator().validate(resource)]


def _errors(issues: list[dict[str, str]]) -> list[dict[str, str]]:
    return [i for i in issues if i["severity"] in ("error", "fatal")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", action="store_true", help="set the HL7 validator up, then exit")
    ap.add_argument("--show", type=int, default=1000, help="disagreements to print")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--json", type=Path, help="write every case's verdicts here")
    args = ap.parse_args()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    setup()
    if args.setup:
        return
    cases = [(n, r) for n, r in corpus() if args.k in n]
    work = HOME / "corpus"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    files = []
    for n, (_, r) in enumerate(cases):
        f = work / f"{n:05d}.json"
        f.write_text(json.dumps(r, ensure_ascii=False))
        files.append(f)
    theirs = oracle(files)
    agree, rows = 0, []
    for (name, r), f in zip(cases, files, strict=True):
        t = _errors(theirs.get(str(f), [{"severity": "fatal", "code": "exception", "expression": "",
                                          "message": "no answer"}]))
        o = _errors(ours(r))
        same = bool(t) == bool(o)
        agree += same
        rows.append({"case": name, "agree": same, "hl7": t, "ours": o})
        if not same and args.show > 0:
            args.show -= 1
            print(f"DISAGREE {name}: hl7={'error' if t else 'ok'} ours={'error' if o else 'ok'}")
            for issue in (t or o)[:3]:
                print(f"    {'hl7 ' if t else 'ours'} {issue['expression']}: {issue['message'][:160]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    print(f"{len(cases)} cases, {agree} agreements ({agree / max(len(cases), 1):.1%}), "
          f"{len(cases) - agree} disagreements")


if __name__ == "__main__":
    main()
