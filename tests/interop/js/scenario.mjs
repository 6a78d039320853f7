// fhir-kit-client (Node) driving the server as a JavaScript application would.
//
// Usage: node scenario.mjs BASE_URL RUN_TAG. Prints one JSON object per line and step: `step`, the HTTP
// exchanges the step made (`http`: method, url, status, the If-None-Exist header when sent), the facts the test
// asserts, and `error` (status, body) when the client threw. A failing step does not stop the scenario, so the
// test sees every step's outcome. Assertions live in tests/test_interop_js.py, not here.
import { randomUUID } from 'node:crypto';
import { Client } from 'fhir-kit-client';

const [base, run] = process.argv.slice(2);
if (!base || !run) {
  console.error('usage: node scenario.mjs BASE_URL RUN_TAG');
  process.exit(2);
}

const SYSTEM = 'urn:oid:1.2.250.1.213.1.4.11';
const VALUE = `js-${run}`;
const FAMILY = `Kit${run}`;
const TIMEOUT_MS = 30_000;

// Record every exchange the library makes (it calls the global fetch with a Request).
let exchanges = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const req = input instanceof Request ? input : new Request(input, init);
  const record = { method: req.method, url: req.url };
  const ine = req.headers.get('if-none-exist');
  if (ine) record.if_none_exist = ine;
  exchanges.push(record);
  const res = await realFetch(req, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  record.status = res.status;
  record.response_type = res.headers.get('content-type');
  return res;
};

const client = new Client({ baseUrl: base });

function statusOf(result) {
  return Client.httpFor(result).response?.status ?? null;
}

async function step(name, body) {
  const out = { step: name };
  exchanges = [];
  try {
    await body(out);
  } catch (err) {
    const data = err.response?.data;
    out.error = {
      status: err.response?.status ?? null,
      message: String(err.message),
      body: typeof data === 'string' ? data.slice(0, 2000) : data ?? null,
    };
  }
  out.http = exchanges;
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function newPatient(value) {
  return {
    resourceType: 'Patient',
    identifier: [{ system: SYSTEM, value }],
    name: [{ family: FAMILY, given: ['Zoé'] }],
    gender: 'female',
  };
}

const ids = (bundle) => (bundle.entry ?? []).map((e) => e.resource.id);
let pid;

await step('capabilities', async (out) => {
  const cs = await client.capabilityStatement();
  out.fhirVersion = cs.fhirVersion;
  out.types = cs.rest[0].resource.map((r) => r.type);
});

await step('create', async (out) => {
  const p = await client.create({ resourceType: 'Patient', body: newPatient(VALUE) });
  pid = p.id;
  Object.assign(out, { status: statusOf(p), id: p.id, version: p.meta?.versionId });
});

await step('conditional_create_existing', async (out) => {
  const p = await client.create({
    resourceType: 'Patient',
    body: newPatient(VALUE),
    options: { headers: { 'If-None-Exist': `identifier=${SYSTEM}|${VALUE}` } },
  });
  Object.assign(out, { status: statusOf(p), id: p.id, version: p.meta?.versionId });
});

await step('conditional_create_new', async (out) => {
  const p = await client.create({
    resourceType: 'Patient',
    body: newPatient(`${VALUE}-new`),
    options: { headers: { 'If-None-Exist': `identifier=${SYSTEM}|${VALUE}-new` } },
  });
  Object.assign(out, { status: statusOf(p), id: p.id, version: p.meta?.versionId });
});

await step('read', async (out) => {
  const p = await client.read({ resourceType: 'Patient', id: pid });
  Object.assign(out, {
    status: statusOf(p),
    id: p.id,
    version: p.meta?.versionId,
    family: p.name[0].family,
    given: p.name[0].given,
    identifier: p.identifier,
    lastUpdated: p.meta?.lastUpdated ?? null,
  });
});

await step('update', async (out) => {
  const p = await client.read({ resourceType: 'Patient', id: pid });
  p.gender = 'male';
  const u = await client.update({ resourceType: 'Patient', id: pid, body: p });
  Object.assign(out, { status: statusOf(u), id: u.id, version: u.meta?.versionId, gender: u.gender });
});

await step('conditional_update', async (out) => {
  const p = await client.read({ resourceType: 'Patient', id: pid });
  p.birthDate = '1984-03-07';
  const u = await client.update({
    resourceType: 'Patient',
    searchParams: { identifier: `${SYSTEM}|${VALUE}` },
    body: p,
  });
  Object.assign(out, { status: statusOf(u), id: u.id, version: u.meta?.versionId, birthDate: u.birthDate });
});

await step('vread', async (out) => {
  const v1 = await client.vread({ resourceType: 'Patient', id: pid, version: '1' });
  Object.assign(out, { status: statusOf(v1), version: v1.meta?.versionId, gender: v1.gender });
});

await step('search_identifier', async (out) => {
  const b = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${SYSTEM}|${VALUE}` } });
  Object.assign(out, { type: b.type, total: b.total, ids: ids(b) });
});

await step('search_name', async (out) => {
  let b = await client.search({
    resourceType: 'Patient',
    searchParams: { name: 'zoe', family: FAMILY, _count: 1 },
  });
  const all = ids(b);
  let pages = 1;
  for (let next = client.nextPage({ bundle: b }); next && pages < 10; next = client.nextPage({ bundle: b })) {
    b = await next;
    all.push(...ids(b));
    pages += 1;
  }
  Object.assign(out, { total: b.total, pages, ids: all });
});

await step('search_post', async (out) => {
  const b = await client.search({
    resourceType: 'Patient',
    searchParams: { identifier: `${SYSTEM}|${VALUE}` },
    options: { postSearch: true },
  });
  Object.assign(out, { type: b.type, ids: ids(b) });
});

await step('transaction', async (out) => {
  const uuid = `urn:uuid:${randomUUID()}`;
  const bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { fullUrl: uuid, resource: newPatient(`${VALUE}-tx`), request: { method: 'POST', url: 'Patient' } },
      {
        resource: {
          resourceType: 'Immunization',
          status: 'completed',
          vaccineCode: { coding: [{ system: 'http://hl7.org/fhir/sid/cvx', code: '140' }] },
          patient: { reference: uuid },
          occurrenceDateTime: '2021-10-01',
        },
        request: { method: 'POST', url: 'Immunization' },
      },
      {
        resource: newPatient(VALUE),
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${SYSTEM}|${VALUE}` },
      },
    ],
  };
  const resp = await client.transaction({ body: bundle });
  out.type = resp.type;
  out.statuses = resp.entry.map((e) => e.response.status);
  out.locations = resp.entry.map((e) => e.response.location);
  const [txPatient, immId] = out.locations.map((l) => l.split('/')[1]);
  const imm = await client.read({ resourceType: 'Immunization', id: immId });
  out.imm_patient = imm.patient.reference;
  out.tx_patient = txPatient;
  out.imm_id = immId;
  const found = await client.search({ resourceType: 'Immunization', searchParams: { patient: `Patient/${txPatient}` } });
  out.imm_search = ids(found);
  // the library's own reference resolution, against the server
  const resolved = await client.resolve({ reference: imm.patient.reference });
  out.resolved = `${resolved.resourceType}/${resolved.id}`;
});

await step('history', async (out) => {
  const h = await client.history({ resourceType: 'Patient', id: pid });
  Object.assign(out, { type: h.type, versions: h.entry.map((e) => e.resource.meta.versionId) });
});

await step('delete', async (out) => {
  const r = await client.delete({ resourceType: 'Patient', id: pid });
  out.status = statusOf(r);
});

await step('read_deleted', async (out) => {
  const p = await client.read({ resourceType: 'Patient', id: pid });
  out.status = statusOf(p);
});

await step('search_deleted', async (out) => {
  const b = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${SYSTEM}|${VALUE}` } });
  out.ids = ids(b);
});
