// The side panel of the canvas: a selected node's name, connection and config (a form built
// from its JSON Schema by react-jsonschema-form, or raw JSON), or a selected edge's condition.
import { useEffect, useMemo, useState } from "react";
import Form from "@rjsf/core";
import type { RJSFSchema, UiSchema } from "@rjsf/utils";
import validator from "@rjsf/validator-ajv8";
import type { Connection, Connector, FlowEdge, FlowNode, JSONSchema, Problem } from "../api";
import { fieldErrors, type ErrorTree } from "../lib/problems";
import { prune } from "../lib/config";
import { configSchema, nodeLabel, nodeSubtitle } from "../lib/nodeTypes";

/** formSchema prepares a schema for the form: flowd's schemas name draft 2020-12, whose meta-schema the form's validator does not load; the API validates anyway. */
function formSchema(s: JSONSchema): RJSFSchema {
  const { $schema: _s, $id: _i, ...rest } = s as Record<string, unknown>;
  return rest as RJSFSchema;
}

/** uiFor renders long or raw text (scripts, templates) as text areas. */
function uiFor(s: JSONSchema): UiSchema {
  const ui: UiSchema = { "ui:submitButtonOptions": { norender: true } };
  const props = (s.properties ?? {}) as Record<string, Record<string, unknown>>;
  for (const [k, p] of Object.entries(props)) {
    if (p["x-flowd-raw"] || (typeof p.maxLength === "number" && p.maxLength > 4096)) ui[k] = { "ui:widget": "textarea" };
  }
  return ui;
}

interface NodePanelProps {
  node: FlowNode;
  connectors: Connector[];
  connections: Connection[];
  problems: Problem[];
  readOnly: boolean;
  onChange: (n: FlowNode) => void;
  onDelete: () => void;
}

export function NodePanel({ node, connectors, connections, problems, readOnly, onChange, onDelete }: NodePanelProps) {
  const schema = configSchema(node, connectors);
  const [raw, setRaw] = useState(schema === undefined);
  const [text, setText] = useState(() => JSON.stringify(node.config ?? {}, null, 2));
  const [parseError, setParseError] = useState("");
  const { tree, node: nodeProblems } = useMemo(() => fieldErrors(problems), [problems]);
  const rjsfSchema = useMemo(() => (schema ? formSchema(schema) : undefined), [schema]);
  const ui = useMemo(() => (schema ? uiFor(schema) : {}), [schema]);

  // Switching to JSON shows what the form holds now. (The panel is keyed by node id, so another
  // node gets a fresh panel and fresh state.)
  useEffect(() => {
    if (!raw) return;
    setText(JSON.stringify(node.config ?? {}, null, 2));
    setParseError("");
  }, [raw]); // only on the switch: while typing, the text is the source

  function onText(v: string) {
    setText(v);
    try {
      const parsed = JSON.parse(v);
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        setParseError("The config must be a JSON object.");
        return;
      }
      setParseError("");
      onChange({ ...node, config: parsed });
    } catch (e) {
      setParseError(`Not JSON yet: ${(e as Error).message}`);
    }
  }

  const usable = connections.filter((c) => !c.type.includes(".") || c.type.startsWith(`${node.connector}.`));
  const needsConnection = node.type === "action" || node.type === "trigger.poll";
  const configTree = tree as ErrorTree;
  return (
    <aside className="panel" aria-label={`Node ${node.id}`} data-testid="node-panel">
      <h2>{nodeLabel(node)}</h2>
      <p className="muted small">
        <code>{node.id}</code> · {nodeSubtitle(node)}
      </p>
      {nodeProblems.map((p, i) => (
        <p key={i} role="alert" className="error">
          {p.message} <span className="muted">({p.path})</span>
        </p>
      ))}
      <label>
        Name
        <input value={node.name ?? ""} readOnly={readOnly} onChange={(e) => onChange({ ...node, name: e.target.value || undefined })} />
      </label>
      {needsConnection && (
        <label>
          Connection
          <select value={node.connection ?? ""} disabled={readOnly} onChange={(e) => onChange({ ...node, connection: e.target.value || undefined })}>
            <option value="">none</option>
            {usable.map((c) => (
              <option key={c.id} value={c.id}>
                {c.name} ({c.type})
              </option>
            ))}
          </select>
        </label>
      )}
      <fieldset className="config">
        <legend>Config</legend>
        {schema && (
          <label className="inline">
            <input type="checkbox" checked={raw} onChange={(e) => setRaw(e.target.checked)} /> Edit as JSON
          </label>
        )}
        {raw || !rjsfSchema ? (
          <>
            <label htmlFor={`raw-${node.id}`} className={schema ? "sr-only" : undefined}>
              Config (JSON)
            </label>
            <textarea id={`raw-${node.id}`} className="code" rows={12} value={text} readOnly={readOnly} onChange={(e) => onText(e.target.value)} spellCheck={false} />
            {parseError && <p className="error">{parseError}</p>}
            {Object.keys(configTree).length > 0 && (
              <ul className="error" role="alert">
                {problems
                  .filter((p) => !nodeProblems.includes(p))
                  .map((p, i) => (
                    <li key={i}>
                      {p.message} <span className="muted">({p.path})</span>
                    </li>
                  ))}
              </ul>
            )}
          </>
        ) : (
          <Form
            key={node.id}
            schema={rjsfSchema}
            uiSchema={ui}
            formData={node.config ?? {}}
            validator={validator}
            extraErrors={tree as never}
            showErrorList={false}
            noHtml5Validate
            // Defaults are the server's business: optional objects (auth, ...) stay absent
            // until filled in, and a form left alone sends back nothing it did not get.
            experimental_defaultFormStateBehavior={{ emptyObjectFields: "skipDefaults" }}
            disabled={readOnly}
            onChange={(e) => onChange({ ...node, config: (prune(e.formData) ?? {}) as Record<string, unknown> })}
          />
        )}
      </fieldset>
      {!readOnly && (
        <button type="button" className="danger" onClick={onDelete}>
          Delete node
        </button>
      )}
    </aside>
  );
}

interface EdgePanelProps {
  edge: FlowEdge;
  problems: Problem[];
  readOnly: boolean;
  onChange: (e: FlowEdge) => void;
  onDelete: () => void;
}

export function EdgePanel({ edge, problems, readOnly, onChange, onDelete }: EdgePanelProps) {
  return (
    <aside className="panel" aria-label="Edge" data-testid="edge-panel">
      <h2>
        {edge.source} → {edge.target}
      </h2>
      <p className="muted small">port: {edge.port || "(single output)"}</p>
      {problems.map((p, i) => (
        <p key={i} role="alert" className="error">
          {p.message}
        </p>
      ))}
      <label>
        Condition (expression; the edge is followed only when it is true)
        <input value={edge.condition ?? ""} readOnly={readOnly} placeholder="e.g. input.total > 100" onChange={(e) => onChange({ ...edge, condition: e.target.value || undefined })} />
      </label>
      {!readOnly && (
        <button type="button" className="danger" onClick={onDelete}>
          Delete edge
        </button>
      )}
    </aside>
  );
}
