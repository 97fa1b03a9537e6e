import { useState, type FormEvent } from "react";
import { describe } from "../api";

export function SignIn({ submit }: { submit: (token: string) => Promise<void> }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function onSubmit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      await submit(token);
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="signin">
      <form onSubmit={onSubmit} aria-labelledby="signin-title">
        <h1 id="signin-title">Sign in to flowd</h1>
        <p className="muted">Use an API token: <code>flowd dev</code> prints the administrator's; a user's comes from <code>POST /api/v1/users/&#123;id&#125;/tokens</code>.</p>
        <label htmlFor="token">API token</label>
        <input id="token" type="password" autoComplete="current-password" value={token} onChange={(e) => setToken(e.target.value)} required autoFocus />
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy || token.trim() === ""}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
