import { useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { describe, type ListMeta } from "../api";

/** useLoad runs load now, again when deps change, and every `every` ms when given (live views). */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], every?: number) {
  const [data, setData] = useState<T | undefined>();
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  const seq = useRef(0);
  // The caller names what load depends on (deps), as with useEffect.
  const run = useCallback(load, deps);
  useEffect(() => {
    const mine = ++seq.current;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const go = () => {
      run()
        .then((d) => {
          if (seq.current !== mine) return;
          setData(d);
          setError("");
        })
        .catch((e) => seq.current === mine && setError(describe(e)))
        .finally(() => {
          if (every && seq.current === mine) timer = setTimeout(go, every);
        });
    };
    go();
    return () => {
      seq.current++;
      if (timer) clearTimeout(timer);
    };
  }, [run, tick, every]);
  return { data, error, reload: () => setTick((t) => t + 1), setData };
}

export function ErrorText({ children }: { children: ReactNode }) {
  if (!children) return null;
  return (
    <p role="alert" className="error">
      {children}
    </p>
  );
}

export function Status({ value }: { value: string }) {
  return <span className={`status status-${value}`}>{value}</span>;
}

export function Pager({ meta, onPage, label }: { meta?: ListMeta; onPage: (n: number) => void; label: string }) {
  if (!meta) return null;
  const pages = Math.max(meta.totalPages, 1);
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <button type="button" onClick={() => onPage(meta.page - 1)} disabled={meta.page <= 1}>
        Previous
      </button>
      <span>
        Page {meta.page} of {pages} · {meta.total} in all
      </span>
      <button type="button" onClick={() => onPage(meta.page + 1)} disabled={meta.page >= pages}>
        Next
      </button>
    </nav>
  );
}

export function when(iso?: string): string {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function Json({ value, label }: { value: unknown; label: string }) {
  if (value === undefined) return null;
  return (
    <details className="json" open>
      <summary>{label}</summary>
      <pre aria-label={label}>{JSON.stringify(value, null, 2)}</pre>
    </details>
  );
}
