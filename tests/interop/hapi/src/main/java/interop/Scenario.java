package interop;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.api.MethodOutcome;
import ca.uhn.fhir.rest.client.api.IClientInterceptor;
import ca.uhn.fhir.rest.client.api.IGenericClient;
import ca.uhn.fhir.rest.client.api.IHttpRequest;
import ca.uhn.fhir.rest.client.api.IHttpResponse;
import ca.uhn.fhir.rest.client.api.ServerValidationModeEnum;
import ca.uhn.fhir.rest.server.exceptions.BaseServerResponseException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CapabilityStatement;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Enumerations.AdministrativeGender;
import org.hl7.fhir.r4.model.Immunization;
import org.hl7.fhir.r4.model.Patient;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.Resource;

/**
 * The HAPI FHIR generic client driving the server as a Java application would, once in JSON and once in XML.
 *
 * <p>Usage: {@code Scenario BASE_URL RUN_TAG}. Prints one JSON object per line and step: {@code enc}, {@code step},
 * the HTTP exchanges the step made ({@code http}: method, url, status, and the If-None-Exist header when sent),
 * facts the test asserts, and {@code error} (exception class, status, response body) when the client threw. A step
 * that fails does not stop the scenario, so the test sees every step's outcome. Assertions live in
 * tests/test_interop_hapi.py, not here.
 */
public final class Scenario {
  static final String SYSTEM = "urn:oid:1.2.250.1.213.1.4.10";

  private final IGenericClient client;
  private final String enc;
  private final String run;
  private final List<Map<String, Object>> exchanges = new ArrayList<>();
  private Map<String, Object> pending;

  /** {@code encoding} null keeps HAPI's defaults: JSON bodies, no {@code _format}, an Accept naming both formats. */
  Scenario(FhirContext ctx, String base, EncodingEnum encoding, String run) {
    this.client = ctx.newRestfulGenericClient(base);
    if (encoding != null) {
      this.client.setEncoding(encoding);
    }
    this.enc = encoding == null ? "default" : encoding == EncodingEnum.XML ? "xml" : "json";
    this.run = run;
    this.client.registerInterceptor(new IClientInterceptor() {
      @Override
      public void interceptRequest(IHttpRequest request) {
        pending = new LinkedHashMap<>();
        pending.put("method", request.getHttpVerbName());
        pending.put("url", request.getUri());
        List<String> ine = request.getAllHeaders().get("If-None-Exist");
        if (ine != null && !ine.isEmpty()) {
          pending.put("if_none_exist", ine.get(0));
        }
        List<String> accept = request.getAllHeaders().get("Accept");
        if (accept != null && !accept.isEmpty()) {
          pending.put("accept", accept.get(0));
        }
        exchanges.add(pending);
      }

      @Override
      public void interceptResponse(IHttpResponse response) {
        if (pending != null) {
          pending.put("status", response.getStatus());
          pending.put("response_type", response.getMimeType());
        }
      }
    });
  }

  interface Step {
    void run(Map<String, Object> out) throws Exception;
  }

  /** Runs one step, printing its line whatever happens. */
  void step(String name, Step body) {
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("enc", enc);
    out.put("step", name);
    exchanges.clear();
    try {
      body.run(out);
    } catch (BaseServerResponseException e) {
      Map<String, Object> err = new LinkedHashMap<>();
      err.put("class", e.getClass().getSimpleName());
      err.put("status", e.getStatusCode());
      err.put("message", e.getMessage());
      String bodyText = e.getResponseBody();
      err.put("body", bodyText == null ? null : bodyText.substring(0, Math.min(bodyText.length(), 2000)));
      out.put("error", err);
    } catch (Exception e) {
      Map<String, Object> err = new LinkedHashMap<>();
      err.put("class", e.getClass().getName());
      err.put("message", String.valueOf(e.getMessage()));
      out.put("error", err);
    }
    out.put("http", new ArrayList<>(exchanges));
    System.out.println(Json.write(out));
    System.out.flush();
  }

  String family() {
    return "Hapi" + Character.toUpperCase(enc.charAt(0)) + enc.substring(1) + run;
  }

  Patient newPatient(String value) {
    return newPatient(value, family());
  }

  Patient newPatient(String value, String family) {
    Patient p = new Patient();
    p.addIdentifier().setSystem(SYSTEM).setValue(value);
    p.addName().setFamily(family).addGiven("Zoé");
    p.setGender(AdministrativeGender.FEMALE);
    return p;
  }

  static List<String> ids(Bundle b) {
    List<String> out = new ArrayList<>();
    for (Bundle.BundleEntryComponent e : b.getEntry()) {
      out.add(e.getResource().getIdElement().getIdPart());
    }
    return out;
  }

  static void outcome(Map<String, Object> out, MethodOutcome mo) {
    out.put("created", mo.getCreated());
    out.put("id", mo.getId() == null ? null : mo.getId().getIdPart());
    out.put("version", mo.getId() == null ? null : mo.getId().getVersionIdPart());
    if (mo.getResource() instanceof Resource r) {
      out.put("resource_id", r.getIdElement().getIdPart());
      out.put("resource_version", r.getMeta().getVersionId());
    }
  }

  void run() {
    String value = enc + "-" + run;
    String[] pid = new String[1];
    String[] sid = new String[1];

    step("capabilities", out -> {
      CapabilityStatement cs = client.capabilities().ofType(CapabilityStatement.class).execute();
      out.put("fhirVersion", cs.getFhirVersion().toCode());
      List<String> types = new ArrayList<>();
      cs.getRestFirstRep().getResource().forEach(r -> types.add(r.getType()));
      out.put("types", types);
    });

    step("create", out -> {
      MethodOutcome mo = client.create().resource(newPatient(value)).execute();
      outcome(out, mo);
      pid[0] = mo.getId().getIdPart();
    });

    step("create_second", out -> {
      MethodOutcome mo = client.create().resource(newPatient(value + "-2")).execute();
      outcome(out, mo);
      sid[0] = mo.getId().getIdPart();
    });

    step("conditional_create_existing", out -> {
      MethodOutcome mo = client.create().resource(newPatient(value))
          .conditional().where(Patient.IDENTIFIER.exactly().systemAndCode(SYSTEM, value)).execute();
      outcome(out, mo);
    });

    step("conditional_create_new", out -> {
      String other = value + "-new";
      MethodOutcome mo = client.create().resource(newPatient(other, "Cond" + family()))
          .conditional().where(Patient.IDENTIFIER.exactly().systemAndCode(SYSTEM, other)).execute();
      outcome(out, mo);
    });

    step("conditional_create_string", out -> {
      // the relative form of the header, as http.html shows it
      MethodOutcome mo = client.create().resource(newPatient(value))
          .conditionalByUrl("Patient?identifier=" + SYSTEM + "|" + value).execute();
      outcome(out, mo);
    });

    step("read", out -> {
      Patient p = client.read().resource(Patient.class).withId(pid[0]).execute();
      out.put("id", p.getIdElement().getIdPart());
      out.put("version", p.getMeta().getVersionId());
      out.put("family", p.getNameFirstRep().getFamily());
      out.put("given", p.getNameFirstRep().getGivenAsSingleString());
      out.put("identifier", p.getIdentifierFirstRep().getSystem() + "|" + p.getIdentifierFirstRep().getValue());
      out.put("lastUpdated", p.getMeta().getLastUpdated() != null);
    });

    step("update", out -> {
      Patient p = client.read().resource(Patient.class).withId(pid[0]).execute();
      p.setGender(AdministrativeGender.MALE);
      MethodOutcome mo = client.update().resource(p).execute();
      outcome(out, mo);
      Patient again = client.read().resource(Patient.class).withId(pid[0]).execute();
      out.put("gender", again.getGender().toCode());
      out.put("read_version", again.getMeta().getVersionId());
    });

    step("vread", out -> {
      Patient v1 = client.read().resource(Patient.class).withIdAndVersion(pid[0], "1").execute();
      out.put("version", v1.getMeta().getVersionId());
      out.put("gender", v1.getGender().toCode());
    });

    step("search_identifier", out -> {
      Bundle b = client.search().forResource(Patient.class)
          .where(Patient.IDENTIFIER.exactly().systemAndCode(SYSTEM, value))
          .returnBundle(Bundle.class).execute();
      out.put("type", b.getType().toCode());
      out.put("total", b.getTotal());
      out.put("ids", ids(b));
    });

    step("search_name", out -> {
      Bundle b = client.search().forResource(Patient.class)
          .where(Patient.NAME.matches().value("zoe"))
          .and(Patient.FAMILY.matches().value(family()))
          .sort().ascending(Patient.IDENTIFIER)
          .count(1)
          .returnBundle(Bundle.class).execute();
      List<String> all = new ArrayList<>(ids(b));
      out.put("first_page", all.size());
      int pages = 1;
      while (b.getLink(Bundle.LINK_NEXT) != null && pages < 10) {
        b = client.loadPage().next(b).execute();
        all.addAll(ids(b));
        pages++;
      }
      out.put("pages", pages);
      out.put("ids", all);
    });

    step("transaction", out -> {
      Bundle tx = new Bundle();
      tx.setType(Bundle.BundleType.TRANSACTION);
      String uuid = "urn:uuid:" + java.util.UUID.randomUUID();
      Patient p = newPatient(value + "-tx");
      tx.addEntry().setFullUrl(uuid).setResource(p)
          .getRequest().setMethod(Bundle.HTTPVerb.POST).setUrl("Patient");
      Immunization imm = new Immunization();
      imm.setStatus(Immunization.ImmunizationStatus.COMPLETED);
      imm.setVaccineCode(new CodeableConcept().addCoding(
          new org.hl7.fhir.r4.model.Coding("http://hl7.org/fhir/sid/cvx", "140", null)));
      imm.setPatient(new Reference(uuid));
      imm.setOccurrence(new org.hl7.fhir.r4.model.DateTimeType("2021-10-01"));
      tx.addEntry().setResource(imm).getRequest().setMethod(Bundle.HTTPVerb.POST).setUrl("Immunization");
      tx.addEntry().setResource(newPatient(value)).getRequest().setMethod(Bundle.HTTPVerb.POST).setUrl("Patient")
          .setIfNoneExist("identifier=" + SYSTEM + "|" + value);
      Bundle resp = client.transaction().withBundle(tx).execute();
      out.put("type", resp.getType().toCode());
      List<String> statuses = new ArrayList<>();
      List<String> locations = new ArrayList<>();
      for (Bundle.BundleEntryComponent e : resp.getEntry()) {
        statuses.add(e.getResponse().getStatus());
        locations.add(e.getResponse().getLocation());
      }
      out.put("statuses", statuses);
      out.put("locations", locations);
      String immId = new org.hl7.fhir.r4.model.IdType(locations.get(1)).getIdPart();
      String txPatient = new org.hl7.fhir.r4.model.IdType(locations.get(0)).getIdPart();
      Immunization stored = client.read().resource(Immunization.class).withId(immId).execute();
      out.put("imm_patient", stored.getPatient().getReference());
      out.put("tx_patient", txPatient);
      Bundle found = client.search().forResource(Immunization.class)
          .where(Immunization.PATIENT.hasId("Patient/" + txPatient))
          .returnBundle(Bundle.class).execute();
      out.put("imm_search", ids(found));
      out.put("imm_id", immId);
    });

    step("conditional_update", out -> {
      Patient p = newPatient(value + "-2");
      p.setBirthDateElement(new org.hl7.fhir.r4.model.DateType("1984-03-07"));
      MethodOutcome mo = client.update().resource(p)
          .conditional().where(Patient.IDENTIFIER.exactly().systemAndCode(SYSTEM, value + "-2")).execute();
      outcome(out, mo);
    });

    step("patch_json", out -> {
      MethodOutcome mo = client.patch()
          .withBody("[{\"op\": \"replace\", \"path\": \"/gender\", \"value\": \"other\"}]")
          .withId("Patient/" + sid[0]).execute();
      outcome(out, mo);
      out.put("gender", client.read().resource(Patient.class).withId(sid[0]).execute().getGender().toCode());
    });

    step("patch_fhirpath", out -> {
      org.hl7.fhir.r4.model.Parameters patch = new org.hl7.fhir.r4.model.Parameters();
      org.hl7.fhir.r4.model.Parameters.ParametersParameterComponent op = patch.addParameter().setName("operation");
      op.addPart().setName("type").setValue(new org.hl7.fhir.r4.model.CodeType("replace"));
      op.addPart().setName("path").setValue(new org.hl7.fhir.r4.model.StringType("Patient.birthDate"));
      op.addPart().setName("value").setValue(new org.hl7.fhir.r4.model.DateType("1990-01-02"));
      MethodOutcome mo = client.patch().withFhirPatch(patch).withId("Patient/" + sid[0]).execute();
      outcome(out, mo);
      Patient p = client.read().resource(Patient.class).withId(sid[0]).execute();
      out.put("birthDate", p.getBirthDateElement().getValueAsString());
      out.put("gender", p.getGender().toCode());
    });

    step("search_count", out -> {
      Bundle b = client.search().forResource(Patient.class)
          .where(Patient.FAMILY.matches().value(family()))
          .summaryMode(ca.uhn.fhir.rest.api.SummaryEnum.COUNT)
          .returnBundle(Bundle.class).execute();
      out.put("total", b.getTotal());
      out.put("entries", b.getEntry().size());
    });

    step("conditional_delete", out -> {
      client.delete().resourceConditionalByType(Patient.class)
          .where(Patient.IDENTIFIER.exactly().systemAndCode(SYSTEM, value + "-2")).execute();
      Bundle b = client.search().forResource(Patient.class)
          .where(Patient.IDENTIFIER.exactly().systemAndCode(SYSTEM, value + "-2"))
          .returnBundle(Bundle.class).execute();
      out.put("ids_after", ids(b));
    });

    step("history", out -> {
      Bundle h = client.history().onInstance(new org.hl7.fhir.r4.model.IdType("Patient", pid[0]))
          .returnBundle(Bundle.class).execute();
      out.put("type", h.getType().toCode());
      List<String> versions = new ArrayList<>();
      for (Bundle.BundleEntryComponent e : h.getEntry()) {
        versions.add(e.getResource().getMeta().getVersionId());
      }
      out.put("versions", versions);
    });

    step("delete", out -> {
      MethodOutcome mo = client.delete().resourceById("Patient", pid[0]).execute();
      out.put("outcome", mo.getOperationOutcome() != null);
    });

    step("read_deleted", out -> {
      client.read().resource(Patient.class).withId(pid[0]).execute();
      out.put("found", true);
    });

    step("search_deleted", out -> {
      Bundle b = client.search().forResource(Patient.class)
          .where(Patient.IDENTIFIER.exactly().systemAndCode(SYSTEM, value))
          .returnBundle(Bundle.class).execute();
      out.put("ids", ids(b));
    });
  }

  public static void main(String[] args) {
    if (args.length != 2) {
      System.err.println("usage: Scenario BASE_URL RUN_TAG");
      System.exit(2);
    }
    FhirContext ctx = FhirContext.forR4();
    // ONCE (the default) fetches /metadata before the first call and checks its fhirVersion: part of the test
    ctx.getRestfulClientFactory().setServerValidationMode(ServerValidationModeEnum.ONCE);
    ctx.getRestfulClientFactory().setConnectTimeout(10_000);
    ctx.getRestfulClientFactory().setSocketTimeout(30_000);
    new Scenario(ctx, args[0], null, args[1]).run();
    new Scenario(ctx, args[0], EncodingEnum.JSON, args[1]).run();
    new Scenario(ctx, args[0], EncodingEnum.XML, args[1]).run();
  }
}
