// The console talks to flowd only through its public API, with the signed-in user's token:
// everything it shows is scoped exactly as the API scopes it.

export interface Problem {
  code: string;
  message: string;
  path?: string;
}

/** ApiError is a non-2xx answer, with the API's problems ({"errors": [...]}). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problems: Problem[],
    readonly etag?: string,
  ) {
    super(problems.map((p) => p.message).join("; ") || `HTTP ${status}`);
  }
}

export interface ListMeta {
  total: number;
  page: number;
  perPage: number;
  totalPages: number;
}

export interface Page<T> {
  data: T[];
  meta: ListMeta;
}

export interface FlowNode {
  id: string;
  name?: string;
  description?: string;
  type: string;
  connector?: string;
  action?: string;
  trigger?: string;
  config?: Record<string, unknown>;
  connection?: string;
  [k: string]: unknown;
}

export interface FlowEdge {
  id?: string;
  source: string;
  target: string;
  port?: string;
  condition?: string;
  [k: string]: unknown;
}

export interface Flow {
  id: string;
  name: string;
  description?: string;
  type?: string;
  status: string;
  statusReason?: { code: string; message: string };
  revision: number;
  graph: { nodes: FlowNode[]; edges: FlowEdge[] };
  createdAt?: string;
  updatedAt?: string;
  [k: string]: unknown;
}

export interface Step {
  nodeId: string;
  type: string;
  status: string;
  attempt: number;
  port?: string;
  input?: unknown;
  output?: unknown;
  error?: { code: string; message: string };
  startedAt?: string;
  finishedAt?: string;
  replayed?: boolean;
}

export interface Execution {
  id: string;
  flowId: string;
  revision: number;
  trigger: string;
  status: string;
  receivedAt: string;
  startedAt?: string;
  finishedAt?: string;
  durationMs?: number;
  error?: { code: string; message: string };
  steps?: Step[];
}

export interface Me {
  id: string;
  username: string;
  tenant?: string;
  permissions: string[];
  roles?: string[];
}

export interface JSONSchema {
  [k: string]: unknown;
}

export interface ConnectorOperation {
  title?: string;
  description?: string;
  configSchema?: JSONSchema;
  ports?: string[];
  [k: string]: unknown;
}

export interface Connector {
  name: string;
  version: string;
  description?: string;
  actions?: Record<string, ConnectorOperation>;
  triggers?: Record<string, ConnectorOperation>;
  credentialTypes?: Record<string, { title?: string; description?: string; schema?: JSONSchema; [k: string]: unknown }>;
}

export interface Connection {
  id: string;
  name: string;
  type: string;
  owner: string;
  tenant?: string;
  shared: boolean;
  data: Record<string, unknown>;
  secretFields: string[];
  createdAt: string;
  updatedAt: string;
}

export interface Stats {
  from?: string;
  to?: string;
  perMinute: { minute: string; success: number; error: number; ignored: number }[];
  totals: { success: number; error: number; ignored: number };
  allTime: { success: number; error: number; ignored: number };
}

export interface ErrorSummary {
  groups: { code: string; count: number; lastMessage: string; lastExecutionId: string; lastAt: string; firstAt: string }[];
  open: number;
  resolved: number;
  truncated?: boolean;
}

export interface Revision {
  revision: number;
  createdAt?: string;
  [k: string]: unknown;
}

export type Query = Record<string, string | number | undefined>;

export function queryString(q: Query = {}): string {
  const parts = Object.entries(q)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k).replace(/%5B/g, "[").replace(/%5D/g, "]")}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

/** Client calls /api/v1 with a bearer token. onUnauthorized runs on a 401 (token revoked or expired). */
export class Client {
  constructor(
    readonly token: string,
    private readonly onUnauthorized: () => void = () => {},
    private readonly base = "/api/v1",
  ) {}

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ data: T; etag?: string; status: number; meta?: ListMeta }> {
    const res = await fetch(this.base + path, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const etag = res.headers.get("ETag") ?? undefined;
    const text = await res.text();
    let parsed: { data?: T; meta?: ListMeta; errors?: Problem[] } = {};
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { errors: [{ code: "bad_response", message: text.slice(0, 200) }] };
      }
    }
    if (!res.ok) {
      if (res.status === 401) this.onUnauthorized();
      throw new ApiError(res.status, parsed.errors ?? [{ code: `http_${res.status}`, message: res.statusText }], etag);
    }
    return { data: parsed.data as T, etag, status: res.status, meta: parsed.meta };
  }

  async get<T>(path: string, q?: Query): Promise<T> {
    return (await this.request<T>("GET", path + queryString(q))).data;
  }

  async list<T>(path: string, q?: Query): Promise<Page<T>> {
    const r = await this.request<T[]>("GET", path + queryString(q));
    return { data: r.data ?? [], meta: r.meta ?? { total: 0, page: 1, perPage: 0, totalPages: 0 } };
  }

  me = () => this.get<Me>("/users/me");
  flows = (q: Query) => this.list<Flow>("/flows", q);
  flow = (id: string) => this.request<Flow>("GET", `/flows/${encodeURIComponent(id)}`);
  createFlow = (doc: unknown) => this.request<Flow>("POST", "/flows", doc);
  patchFlow = (id: string, patch: unknown, revision: number) =>
    this.request<Flow>("PATCH", `/flows/${encodeURIComponent(id)}`, patch, { "If-Match": `"${revision}"` });
  cloneFlow = (id: string) => this.request<Flow>("POST", `/flows/${encodeURIComponent(id)}/clone`);
  deleteFlow = (id: string) => this.request<unknown>("DELETE", `/flows/${encodeURIComponent(id)}`);
  startFlow = (id: string) => this.request<Flow>("POST", `/flows/${encodeURIComponent(id)}/start`);
  stopFlow = (id: string) => this.request<Flow>("POST", `/flows/${encodeURIComponent(id)}/stop`);
  revisions = (id: string, q: Query) => this.list<Revision>(`/flows/${encodeURIComponent(id)}/revisions`, q);
  revision = (id: string, n: number) => this.get<Flow>(`/flows/${encodeURIComponent(id)}/revisions/${n}`);
  executions = (flowId: string, q: Query) => this.list<Execution>(`/flows/${encodeURIComponent(flowId)}/executions`, q);
  execution = (id: string) => this.get<Execution>(`/executions/${encodeURIComponent(id)}`);
  retryExecution = (id: string) => this.request<unknown>("POST", `/executions/${encodeURIComponent(id)}/retry`);
  stats = (flowId: string) => this.get<Stats>(`/flows/${encodeURIComponent(flowId)}/stats`);
  errors = (flowId: string) => this.get<ErrorSummary>(`/flows/${encodeURIComponent(flowId)}/errors`);
  retryErrors = (flowId: string, code: string) => this.request<unknown>("POST", `/flows/${encodeURIComponent(flowId)}/errors/retry`, { code });
  resolveErrors = (flowId: string, code: string) => this.request<unknown>("POST", `/flows/${encodeURIComponent(flowId)}/errors/resolve`, { code });
  connectors = () => this.list<Connector>("/connectors", { "page[size]": 100 });
  connections = (q: Query) => this.list<Connection>("/connections", q);
  createConnection = (c: unknown) => this.request<Connection>("POST", "/connections", c);
  patchConnection = (id: string, c: unknown) => this.request<Connection>("PATCH", `/connections/${encodeURIComponent(id)}`, c);
  deleteConnection = (id: string) => this.request<unknown>("DELETE", `/connections/${encodeURIComponent(id)}`);
}

/** describe turns any thrown value into one line for the user. */
export function describe(err: unknown): string {
  if (err instanceof ApiError) {
    return err.problems.map((p) => (p.path ? `${p.message} (${p.path})` : p.message)).join("; ");
  }
  return err instanceof Error ? err.message : String(err);
}
