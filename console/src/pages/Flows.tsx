import { useState } from "react";
import { Link, useLocation } from "wouter";
import { describe, type Flow } from "../api";
import { ErrorText, Pager, Status, useLoad, when } from "../components/common";
import { can, useSession } from "../session";

const statuses = ["", "active", "inactive", "starting", "stopping", "failed"];
const sorts: [string, string][] = [
  ["-updatedAt", "Recently updated"],
  ["name", "Name A–Z"],
  ["-name", "Name Z–A"],
  ["-createdAt", "Newest"],
  ["createdAt", "Oldest"],
];

export function Flows() {
  const { client, me } = useSession();
  const [, navigate] = useLocation();
  const [search, setSearch] = useState("");
  const [status, setStatus] = useState("");
  const [sort, setSort] = useState("-updatedAt");
  const [page, setPage] = useState(1);
  const [actionError, setActionError] = useState("");
  const [busy, setBusy] = useState("");
  const list = useLoad(
    () => client.flows({ "page[size]": 20, "page[number]": page, "filter[status]": status, sort, search }),
    [client, page, status, sort, search],
  );

  async function act(id: string, what: string, fn: () => Promise<unknown>) {
    setBusy(`${id}:${what}`);
    setActionError("");
    try {
      await fn();
      list.reload();
    } catch (e) {
      setActionError(describe(e));
    } finally {
      setBusy("");
    }
  }

  async function clone(f: Flow) {
    await act(f.id, "clone", async () => {
      const created = await client.cloneFlow(f.id);
      navigate(`/flows/${created.data.id}`);
    });
  }

  function remove(f: Flow) {
    if (!window.confirm(`Delete flow "${f.name}"? Its executions stay until they expire.`)) return;
    void act(f.id, "delete", () => client.deleteFlow(f.id));
  }

  const writer = can(me, "flows.update");
  const controller = can(me, "flows.control");
  return (
    <section aria-labelledby="flows-title">
      <div className="page-head">
        <h1 id="flows-title">Flows</h1>
        {writer && (
          <Link href="/flows/new" className="button primary">
            New flow
          </Link>
        )}
      </div>
      <div className="toolbar" role="search">
        <label>
          Search
          <input type="search" value={search} onChange={(e) => (setSearch(e.target.value), setPage(1))} placeholder="name or description" />
        </label>
        <label>
          Status
          <select value={status} onChange={(e) => (setStatus(e.target.value), setPage(1))}>
            {statuses.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <label>
          Sort
          <select value={sort} onChange={(e) => (setSort(e.target.value), setPage(1))}>
            {sorts.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorText>{list.error || actionError}</ErrorText>
      <table className="list" aria-label="Flows">
        <thead>
          <tr>
            <th>Name</th>
            <th>Status</th>
            <th>Trigger</th>
            <th>Revision</th>
            <th>Updated</th>
            <th>
              <span className="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {list.data?.data.map((f) => (
            <tr key={f.id} data-flow-id={f.id}>
              <td>
                <Link href={`/flows/${f.id}`}>{f.name}</Link>
                {f.description && <div className="muted small">{f.description}</div>}
              </td>
              <td>
                <Status value={f.status} />
              </td>
              <td>{f.type}</td>
              <td>{f.revision}</td>
              <td>{when(f.updatedAt)}</td>
              <td className="actions">
                {controller &&
                  (f.status === "active" || f.status === "starting" ? (
                    <button type="button" disabled={busy !== ""} onClick={() => act(f.id, "stop", () => client.stopFlow(f.id))} aria-label={`Stop ${f.name}`}>
                      Stop
                    </button>
                  ) : (
                    <button type="button" disabled={busy !== ""} onClick={() => act(f.id, "start", () => client.startFlow(f.id))} aria-label={`Start ${f.name}`}>
                      Start
                    </button>
                  ))}
                {writer && (
                  <button type="button" disabled={busy !== ""} onClick={() => clone(f)} aria-label={`Clone ${f.name}`}>
                    Clone
                  </button>
                )}
                {can(me, "flows.delete") && (
                  <button type="button" className="danger" disabled={busy !== ""} onClick={() => remove(f)} aria-label={`Delete ${f.name}`}>
                    Delete
                  </button>
                )}
              </td>
            </tr>
          ))}
          {list.data && list.data.data.length === 0 && (
            <tr>
              <td colSpan={6} className="muted">
                No flows{search || status ? " match" : " yet"}.
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <Pager meta={list.data?.meta} onPage={setPage} label="Flows" />
    </section>
  );
}
