// Validates every manifest in deploy/k8s/*.yaml (hpa.yaml included) against the
// Kubernetes API schemas, with two npm validators:
//  - kubernetes-models: the OpenAPI JSON schemas (types, required fields, enums,
//    formats) of each kind, compiled to validators;
//  - @kubernetes/client-node: the API's field list per type, to reject unknown fields
//    (a misspelt `nodeSelecter` is silently dropped by a non-strict apply).
// Then checks the references between the files: Services select a workload and name
// its ports, volumes name ConfigMaps and claims that exist, probes use container ports,
// GPU pods request nvidia.com/gpu, the HPA targets a workload here, the compositing
// config's inference urls are the StatefulSet's pods (as many as the HPA's maxReplicas).
// A deliberately broken manifest must fail, so a validator that accepts everything
// fails this test too.
// Usage: K8S_NODE_MODULES=DIR node k8s_schema_test.mjs DEPLOY_K8S_DIR
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const dir = path.resolve(process.argv[2] ?? "deploy/k8s");
const modules = path.resolve(process.env.K8S_NODE_MODULES ?? "node_modules");
const require = createRequire(path.join(modules, "noop.js"));
const load = async (spec) => import(pathToFileURL(require.resolve(spec)).href);
const YAML = await load("yaml");
const k8s = await load("@kubernetes/client-node");

const failures = [];
const fail = (where, what) => failures.push(`${where}: ${what}`);

// ---- schema validation ----
async function schemaErrors(doc) {
  let mod;
  try {
    // The package's files mirror apiVersion/kind (ESM only, so by path, not require).
    mod = await import(pathToFileURL(path.join(modules, "kubernetes-models", `${doc.apiVersion}`, `${doc.kind}.js`)).href);
  } catch {
    return [`no schema for apiVersion ${doc.apiVersion} kind ${doc.kind} (expected a built-in Kubernetes kind)`];
  }
  const Model = mod[doc.kind];
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    const errors = e.errors ?? e.details ?? [];
    if (Array.isArray(errors) && errors.length) {
      return errors.map((x) => `${x.instancePath || "/"} ${x.message ?? x.keyword} ${x.params ? JSON.stringify(x.params) : ""}`.trim());
    }
    return [String(e.message)];
  }
}

// ---- unknown fields ----
function className(apiVersion, kind) {
  const version = apiVersion.split("/").pop();
  return version[0].toUpperCase() + version.slice(1) + kind;
}

function unknownFields(value, type, at, out) {
  if (value === null || value === undefined) return;
  let m = /^Array<(.+)>$/.exec(type);
  if (m) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, m[1], `${at}[${i}]`, out));
    return;
  }
  m = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (m) {
    if (typeof value === "object") for (const [k, v] of Object.entries(value)) unknownFields(v, m[1], `${at}.${k}`, out);
    return;
  }
  const cls = k8s[type];
  if (!cls || typeof cls.getAttributeTypeMap !== "function" || typeof value !== "object") return;
  const fields = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) out.push(`${at}.${k}: unknown field of ${type} (known: ${[...fields.keys()].join(", ")})`);
    else unknownFields(v, fields.get(k), `${at}.${k}`, out);
  }
}

async function validate(doc) {
  const errors = await schemaErrors(doc);
  const cls = className(doc.apiVersion ?? "", doc.kind ?? "");
  if (!k8s[cls]) errors.push(`no field list for ${cls}`);
  else unknownFields(doc, cls, doc.kind, errors);
  return errors;
}

// ---- read every manifest ----
const files = fs.readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort();
if (files.length === 0) fail(dir, "no *.yaml manifests");
const objects = [];
for (const file of files) {
  const text = fs.readFileSync(path.join(dir, file), "utf8");
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true });
  for (const [i, d] of docs.entries()) {
    const where = `${file} document ${i + 1}`;
    if (d.errors.length) {
      d.errors.forEach((e) => fail(where, `YAML: ${e.message}`));
      continue;
    }
    const doc = d.toJS();
    if (doc === null) continue;
    const name = `${where} (${doc.kind} ${doc.metadata?.name})`;
    for (const e of await validate(doc)) fail(name, e);
    if (doc.kind !== "Namespace" && doc.metadata?.namespace !== "lipsync") {
      fail(name, `metadata.namespace is ${doc.metadata?.namespace}; expected lipsync`);
    }
    objects.push({ file, doc, name });
  }
  console.log(`[k8s] ${file}: ${docs.length} document(s) checked`);
}

// ---- references between the files ----
const byKind = (kind) => objects.filter((o) => o.doc.kind === kind);
const find = (kind, name) => objects.find((o) => o.doc.kind === kind && o.doc.metadata?.name === name);
const workloads = objects.filter((o) => ["Deployment", "StatefulSet"].includes(o.doc.kind));
const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);

for (const w of workloads) {
  const pod = w.doc.spec.template;
  if (!matches(w.doc.spec.selector.matchLabels, pod.metadata.labels)) fail(w.name, "selector does not match the pod labels");
  for (const v of pod.spec.volumes ?? []) {
    if (v.configMap && !find("ConfigMap", v.configMap.name)) fail(w.name, `volume ${v.name}: no ConfigMap ${v.configMap.name} in ${dir}`);
    if (v.persistentVolumeClaim && !find("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
      fail(w.name, `volume ${v.name}: no PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}`);
    }
  }
  for (const c of pod.spec.containers) {
    const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
    const numbers = new Set(ports.values());
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const grpc = c[probe]?.grpc;
      if (!grpc) fail(w.name, `${c.name}: ${probe} is not a grpc probe (expected grpc.health.v1)`);
      else if (!numbers.has(grpc.port)) fail(w.name, `${c.name}: ${probe} port ${grpc.port} is not a container port`);
    }
    for (const m of c.volumeMounts ?? []) {
      if (!(pod.spec.volumes ?? []).some((v) => v.name === m.name)) fail(w.name, `${c.name}: mount ${m.name} has no volume`);
    }
    if (/cuda/.test(c.image)) {
      if (String(c.resources?.limits?.["nvidia.com/gpu"]) !== "1") fail(w.name, `${c.name}: GPU image without nvidia.com/gpu: 1 limit`);
      if (pod.spec.nodeSelector?.["nvidia.com/gpu.present"] !== "true") fail(w.name, "GPU pod without the GPU pool node selector");
      if (!(pod.spec.tolerations ?? []).some((t) => t.key === "nvidia.com/gpu")) fail(w.name, "GPU pod without the nvidia.com/gpu toleration");
    }
  }
  const cm = (pod.spec.volumes ?? []).find((v) => v.configMap);
  if (cm && !find("ConfigMap", cm.configMap.name)) fail(w.name, "config map missing");
}

for (const s of byKind("Service")) {
  const target = workloads.find((w) => matches(s.doc.spec.selector, w.doc.spec.template.metadata.labels));
  if (!target) {
    fail(s.name, "selects no Deployment or StatefulSet here");
    continue;
  }
  const names = new Set(target.doc.spec.template.spec.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name)));
  for (const p of s.doc.spec.ports) {
    if (typeof p.targetPort === "string" && !names.has(p.targetPort)) fail(s.name, `targetPort ${p.targetPort} is no container port of ${target.doc.metadata.name}`);
  }
}

for (const sts of byKind("StatefulSet")) {
  const svc = find("Service", sts.doc.spec.serviceName);
  if (!svc || svc.doc.spec.clusterIP !== "None") fail(sts.name, `serviceName ${sts.doc.spec.serviceName} is not a headless Service here`);
}

const hpas = byKind("HorizontalPodAutoscaler");
for (const h of hpas) {
  const ref = h.doc.spec.scaleTargetRef;
  if (!find(ref.kind, ref.name)) fail(h.name, `scaleTargetRef ${ref.kind} ${ref.name} is not in ${dir}`);
}

// The compositing config's inference urls are the StatefulSet's pod names.
const compositingConfig = find("ConfigMap", "lipsync-compositing-config");
const inference = byKind("StatefulSet")[0];
if (compositingConfig && inference) {
  const config = YAML.parse(compositingConfig.doc.data["compositing.yaml"]);
  const urls = config?.inference_server?.urls ?? [];
  const { name, namespace } = inference.doc.metadata;
  const port = inference.doc.spec.template.spec.containers[0].ports.find((p) => p.name === "grpc").containerPort;
  urls.forEach((u, i) => {
    const want = `${name}-${i}.${inference.doc.spec.serviceName}.${namespace}.svc.cluster.local:${port}`;
    if (u !== want) fail(compositingConfig.name, `inference_server.urls[${i}] is ${u}; expected ${want}`);
  });
  if (urls.length === 0) fail(compositingConfig.name, "inference_server.urls is empty");
  const hpa = hpas.find((h) => h.doc.spec.scaleTargetRef.kind === "StatefulSet" && h.doc.spec.scaleTargetRef.name === name);
  if (hpa && hpa.doc.spec.maxReplicas !== urls.length) {
    fail(compositingConfig.name, `${urls.length} inference urls but the HPA scales ${name} up to ${hpa.doc.spec.maxReplicas} (expected one url per possible pod)`);
  }
}

// ---- the validators catch a broken manifest ----
const broken = structuredClone(workloads[0]?.doc ?? {});
if (broken.spec) {
  broken.spec.template.spec.nodeSelecter = { a: "b" };
  broken.spec.template.spec.containers[0].readinessProbe = { grpc: { port: "grpc" } };
  const errors = await validate(broken);
  if (!errors.some((e) => e.includes("nodeSelecter"))) fail("self-check", "an unknown field was not reported");
  if (!errors.some((e) => e.includes("readinessProbe/grpc/port"))) fail("self-check", `a string grpc port was not reported: ${errors.join("; ")}`);
}

console.log(`[k8s] ${objects.length} objects in ${files.length} files; kinds: ${[...new Set(objects.map((o) => o.doc.kind))].join(", ")}`);
if (failures.length) {
  failures.forEach((f) => console.error(`FAIL ${f}`));
  process.exit(1);
}
console.log("[k8s] all manifests valid");
