// Validates ServiceMonitor and PrometheusRule objects against the Prometheus Operator's CRD schemas, as compiled
// into the @kubernetes-models/prometheus-operator npm package (hack/install-test-tools.sh installs it).
// Usage: node validate_prometheus_operator.mjs <package prefix> <objects.json>   (exit 1 when one is invalid)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, objectsPath] = process.argv.slice(2);
const models = join(prefix, "node_modules", "@kubernetes-models", "prometheus-operator", "monitoring.coreos.com", "v1", "index.js");
const { ServiceMonitor, PrometheusRule } = await import(pathToFileURL(models).href);
const kinds = { ServiceMonitor, PrometheusRule };
let failed = 0;
for (const object of JSON.parse(readFileSync(objectsPath, "utf8"))) {
  const name = `${object.kind}/${object.metadata?.name}`;
  try {
    new kinds[object.kind](object).validate();
    console.log(`valid ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`invalid ${name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
