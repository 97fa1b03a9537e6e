import { lazy, Suspense, useEffect } from "react";
import { Link, Route, Router, Switch, useLocation } from "wouter";
import { useHashLocation } from "wouter/use-hash-location";
import { SessionGate, useSession } from "./session";
import { SignIn } from "./pages/SignIn";
import { Flows } from "./pages/Flows";

// The canvas, its forms and the charts load on first use, so the first page stays small.
const FlowPage = lazy(() => import("./pages/FlowPage"));
const ExecutionPage = lazy(() => import("./pages/ExecutionPage"));
const Connections = lazy(() => import("./pages/Connections"));
const Connectors = lazy(() => import("./pages/Connectors"));

/** FirstPage marks when the first page is on screen; the browser tests read the mark. */
function FirstPage() {
  useEffect(() => {
    if (performance.getEntriesByName("flowd:first-page").length === 0) performance.mark("flowd:first-page");
  }, []);
  return null;
}

export function App() {
  return (
    <Router hook={useHashLocation}>
      <FirstPage />
      <SessionGate signIn={(submit) => <SignIn submit={submit} />}>
        <Shell />
      </SessionGate>
    </Router>
  );
}

function NavLink({ href, children }: { href: string; children: string }) {
  const [loc] = useLocation();
  const active = loc === href || loc.startsWith(href + "/");
  return (
    <Link href={href} className={active ? "nav-link active" : "nav-link"} aria-current={active ? "page" : undefined}>
      {children}
    </Link>
  );
}

function Shell() {
  const { me, signOut } = useSession();
  return (
    <div className="shell">
      <header className="topbar">
        <span className="brand">flowd</span>
        <nav aria-label="Main">
          <NavLink href="/flows">Flows</NavLink>
          <NavLink href="/connections">Connections</NavLink>
          <NavLink href="/connectors">Connectors</NavLink>
        </nav>
        <div className="whoami" aria-label="Signed in as">
          <span className="user" data-testid="whoami">{me.username}</span>
          <span className="muted">{me.tenant ? `tenant ${me.tenant}` : "no tenant"}</span>
          <span className="muted perms" title={me.permissions.join(", ")}>{me.permissions.join(", ")}</span>
          <button type="button" onClick={signOut}>Sign out</button>
        </div>
      </header>
      <main>
        <Suspense fallback={<p className="muted">Loading…</p>}>
          <Switch>
            <Route path="/flows" component={Flows} />
            <Route path="/flows/new">{() => <FlowPage flowId={null} />}</Route>
            <Route path="/flows/:id/:tab?">{(p) => <FlowPage flowId={p.id} tab={p.tab} />}</Route>
            <Route path="/executions/:id">{(p) => <ExecutionPage id={p.id} />}</Route>
            <Route path="/connections" component={Connections} />
            <Route path="/connectors" component={Connectors} />
            <Route>
              <Redirect />
            </Route>
          </Switch>
        </Suspense>
      </main>
    </div>
  );
}

function Redirect() {
  const [, navigate] = useLocation();
  useEffect(() => navigate("/flows", { replace: true }), [navigate]);
  return null;
}
