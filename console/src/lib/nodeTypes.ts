// What the canvas knows about each kind of node: its label, its output ports and the JSON
// Schema of its config. Trigger schemas are flowd's own published files (schemas/*.json);
// actions and poll triggers take theirs from the connector manifests the API serves.
import webhookSchema from "../../../schemas/trigger-webhook.schema.json";
import kafkaSchema from "../../../schemas/trigger-kafka.schema.json";
import scheduleSchema from "../../../schemas/trigger-schedule.schema.json";
import type { Connector, FlowNode, JSONSchema } from "../api";

export interface NodeKind {
  type: string;
  label: string;
  description: string;
  /** A trigger starts the flow: it has no input. */
  trigger: boolean;
  /** respond ends the flow: it has no outputs. */
  terminal: boolean;
  defaultConfig?: Record<string, unknown>;
  schema?: JSONSchema;
}

export const builtinKinds: NodeKind[] = [
  { type: "trigger.webhook", label: "Webhook", description: "Starts on POST /hooks/<flow id>", trigger: true, terminal: false, defaultConfig: { mode: "sync" }, schema: webhookSchema },
  { type: "trigger.kafka", label: "Kafka topic", description: "Starts on each record of a partner topic", trigger: true, terminal: false, defaultConfig: { topic: "" }, schema: kafkaSchema },
  { type: "trigger.schedule", label: "Schedule", description: "Starts on a cron schedule", trigger: true, terminal: false, defaultConfig: { cron: "*/5 * * * *" }, schema: scheduleSchema },
  { type: "if", label: "If", description: "Routes to port true or false", trigger: false, terminal: false, defaultConfig: { condition: "input != nil" } },
  { type: "switch", label: "Switch", description: "Routes to the first case whose condition holds, else default", trigger: false, terminal: false, defaultConfig: { cases: [{ name: "a", condition: "true" }] } },
  { type: "filter", label: "Filter", description: "Continues only when the condition holds", trigger: false, terminal: false, defaultConfig: { condition: "true" } },
  { type: "split", label: "Split", description: "One item per element of an array", trigger: false, terminal: false, defaultConfig: { path: "input" } },
  { type: "merge", label: "Merge", description: "Waits for every inbound branch", trigger: false, terminal: false, defaultConfig: {} },
  { type: "respond", label: "Respond", description: "Answers a synchronous webhook caller", trigger: false, terminal: true, defaultConfig: { status: 200 } },
];

export function kindOf(type: string): NodeKind | undefined {
  return builtinKinds.find((k) => k.type === type);
}

export function isTrigger(n: FlowNode): boolean {
  // A draft (stored from an Open Integration Hub document without its component) has no type.
  return (n.type ?? "").startsWith("trigger.");
}

/** ports lists a node's output handles; "" is the single, unnamed output. */
export function portsOf(n: FlowNode, connectors: Connector[]): string[] {
  switch (n.type) {
    case "respond":
      return [];
    case "if":
      return ["true", "false"];
    case "switch": {
      const cases = Array.isArray(n.config?.cases) ? (n.config.cases as { name?: unknown }[]) : [];
      const names = cases.map((c) => (typeof c?.name === "string" ? c.name : "")).filter((s) => s !== "");
      return [...names, "default"];
    }
    case "action": {
      const op = connectors.find((c) => c.name === n.connector)?.actions?.[n.action ?? ""];
      return ["success", "error", ...(op?.ports ?? []).filter((p) => p !== "success" && p !== "error")];
    }
    default:
      return [""];
  }
}

/** configSchema is the schema the node's config is checked against, when one is known. */
export function configSchema(n: FlowNode, connectors: Connector[]): JSONSchema | undefined {
  if (n.type === "action") {
    return connectors.find((c) => c.name === n.connector)?.actions?.[n.action ?? ""]?.configSchema;
  }
  if (n.type === "trigger.poll") {
    return connectors.find((c) => c.name === n.connector)?.triggers?.[n.trigger ?? ""]?.configSchema;
  }
  return kindOf(n.type)?.schema;
}

/** label names a node for people: its name, else what it does. */
export function nodeLabel(n: FlowNode): string {
  if (n.name) return n.name;
  if (n.type === "action") return `${n.connector}.${n.action}`;
  if (n.type === "trigger.poll") return `${n.connector}.${n.trigger}`;
  return kindOf(n.type)?.label ?? n.type ?? "draft";
}

/** subtitle says what kind of node it is. */
export function nodeSubtitle(n: FlowNode): string {
  if (n.type === "action") return `${n.connector} · ${n.action}`;
  if (n.type === "trigger.poll") return `poll · ${n.connector} · ${n.trigger}`;
  return n.type ?? "draft: no component yet";
}

/** newNodeId picks an id for a new node that no node of the graph has yet. */
export function newNodeId(base: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  const stem = base.replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 56) || "node";
  if (!used.has(stem)) return stem;
  for (let i = 2; ; i++) {
    const id = `${stem}-${i}`;
    if (!used.has(id)) return id;
  }
}

/** defaultsOf builds a config holding the defaults a schema declares for its top-level properties. */
export function defaultsOf(schema: JSONSchema | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const props = (schema?.properties ?? {}) as Record<string, { default?: unknown }>;
  for (const [k, p] of Object.entries(props)) {
    if (p && p.default !== undefined) out[k] = p.default;
  }
  return out;
}
