// Connections: credentials, always masked by the API ("****"); sending "****" back keeps the
// stored secret, so editing never needs the secret again.
import { useState, type FormEvent } from "react";
import { describe, type Connection } from "../api";
import { ErrorText, Pager, useLoad, when } from "../components/common";
import { can, useSession } from "../session";

/** Starting points for flowd's own connection types; connector types come from their manifests. */
const templates: Record<string, Record<string, unknown>> = {
  basic: { username: "", password: "" },
  api_key: { header: "X-API-Key", key: "" },
  bearer: { token: "" },
  oauth2: { grant: "client_credentials", tokenUrl: "", clientId: "", clientSecret: "", scopes: [] },
};

interface Editing {
  id?: string;
  name: string;
  type: string;
  shared: boolean;
  data: string;
}

export default function Connections() {
  const { client, me } = useSession();
  const [page, setPage] = useState(1);
  const [editing, setEditing] = useState<Editing | null>(null);
  const [error, setError] = useState("");
  const list = useLoad(() => client.connections({ "page[size]": 20, "page[number]": page }), [client, page]);
  const catalog = useLoad(() => client.connectors().then((p) => p.data), [client]);
  const types = [...Object.keys(templates), ...(catalog.data ?? []).flatMap((c) => Object.keys(c.credentialTypes ?? {}).map((t) => `${c.name}.${t}`))];

  function edit(c?: Connection) {
    setError("");
    setEditing(c ? { id: c.id, name: c.name, type: c.type, shared: c.shared, data: JSON.stringify(c.data, null, 2) } : { name: "", type: "bearer", shared: false, data: JSON.stringify(templates.bearer, null, 2) });
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!editing) return;
    let data: unknown;
    try {
      data = JSON.parse(editing.data);
    } catch (err) {
      setError(`Data is not JSON: ${(err as Error).message}`);
      return;
    }
    try {
      if (editing.id) await client.patchConnection(editing.id, { name: editing.name, shared: editing.shared, data });
      else await client.createConnection({ name: editing.name, type: editing.type, shared: editing.shared, data });
      setEditing(null);
      list.reload();
    } catch (err) {
      setError(describe(err));
    }
  }

  async function remove(c: Connection) {
    if (!window.confirm(`Delete connection "${c.name}"? Flows using it will fail to authenticate.`)) return;
    try {
      await client.deleteConnection(c.id);
      list.reload();
    } catch (err) {
      setError(describe(err));
    }
  }

  return (
    <section aria-labelledby="connections-title">
      <div className="page-head">
        <h1 id="connections-title">Connections</h1>
        {can(me, "secrets.create") && (
          <button type="button" className="primary" onClick={() => edit()}>
            New connection
          </button>
        )}
      </div>
      <ErrorText>{list.error || error}</ErrorText>
      {editing && (
        <form className="card-form" onSubmit={submit} aria-label={editing.id ? "Edit connection" : "New connection"}>
          <label>
            Name
            <input value={editing.name} onChange={(e) => setEditing({ ...editing, name: e.target.value })} required />
          </label>
          <label>
            Type
            <select
              value={editing.type}
              disabled={editing.id !== undefined}
              onChange={(e) => setEditing({ ...editing, type: e.target.value, data: JSON.stringify(templates[e.target.value] ?? {}, null, 2) })}
            >
              {types.map((t) => (
                <option key={t} value={t}>
                  {t}
                </option>
              ))}
            </select>
          </label>
          <label className="inline">
            <input type="checkbox" checked={editing.shared} onChange={(e) => setEditing({ ...editing, shared: e.target.checked })} /> Shared with my tenant
          </label>
          <label>
            Data (JSON; secrets show as **** and are kept when sent back unchanged)
            <textarea className="code" rows={8} value={editing.data} onChange={(e) => setEditing({ ...editing, data: e.target.value })} spellCheck={false} />
          </label>
          <div className="actions">
            <button type="submit" className="primary">
              {editing.id ? "Save" : "Create"}
            </button>
            <button type="button" onClick={() => setEditing(null)}>
              Cancel
            </button>
          </div>
        </form>
      )}
      <table className="list" aria-label="Connections">
        <thead>
          <tr>
            <th>Name</th>
            <th>Type</th>
            <th>Shared</th>
            <th>Data</th>
            <th>Updated</th>
            <th>
              <span className="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {list.data?.data.map((c) => (
            <tr key={c.id}>
              <td>{c.name}</td>
              <td>
                <code>{c.type}</code>
              </td>
              <td>{c.shared ? "yes" : "no"}</td>
              <td>
                <code className="small">{JSON.stringify(c.data)}</code>
              </td>
              <td>{when(c.updatedAt)}</td>
              <td className="actions">
                <button type="button" onClick={() => edit(c)} aria-label={`Edit ${c.name}`}>
                  Edit
                </button>
                {can(me, "secrets.delete") && (
                  <button type="button" className="danger" onClick={() => remove(c)} aria-label={`Delete ${c.name}`}>
                    Delete
                  </button>
                )}
              </td>
            </tr>
          ))}
          {list.data && list.data.data.length === 0 && (
            <tr>
              <td colSpan={6} className="muted">
                No connections yet.
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <Pager meta={list.data?.meta} onPage={setPage} label="Connections" />
    </section>
  );
}
