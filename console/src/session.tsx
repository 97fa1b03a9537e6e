// The signed-in user: a token kept for this browser tab only (sessionStorage), and who it is.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { Client, type Me } from "./api";

const KEY = "flowd.token";

export interface Session {
  client: Client;
  me: Me;
  signOut: () => void;
}

const Ctx = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(Ctx);
  if (!s) throw new Error("useSession outside a signed-in page");
  return s;
}

export function can(me: Me, perm: string): boolean {
  return me.permissions.includes("all") || me.permissions.includes(perm);
}

/** SessionGate shows signIn until a token is accepted, then children with the session. */
export function SessionGate({ signIn, children }: { signIn: (submit: (token: string) => Promise<void>) => ReactNode; children: ReactNode }) {
  const [session, setSession] = useState<Session | null>(null);
  const [checking, setChecking] = useState(() => sessionStorage.getItem(KEY) !== null);

  const signOut = useCallback(() => {
    sessionStorage.removeItem(KEY);
    setSession(null);
  }, []);

  const submit = useCallback(
    async (token: string) => {
      const client = new Client(token.trim(), signOut);
      const me = await client.me();
      sessionStorage.setItem(KEY, token.trim());
      setSession({ client, me, signOut });
    },
    [signOut],
  );

  useEffect(() => {
    const saved = sessionStorage.getItem(KEY);
    if (!saved) return;
    submit(saved)
      .catch(() => sessionStorage.removeItem(KEY))
      .finally(() => setChecking(false));
  }, [submit]);

  const value = useMemo(() => session, [session]);
  if (checking) return null;
  if (!value) return <>{signIn(submit)}</>;
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
