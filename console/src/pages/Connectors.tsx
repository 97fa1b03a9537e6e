import { ErrorText, useLoad } from "../components/common";
import { useSession } from "../session";

/** Connectors: the catalog the API validates flows against, with each action and trigger. */
export default function Connectors() {
  const { client } = useSession();
  const list = useLoad(() => client.connectors().then((p) => p.data), [client]);
  return (
    <section aria-labelledby="connectors-title">
      <h1 id="connectors-title">Connectors</h1>
      <ErrorText>{list.error}</ErrorText>
      <div className="catalog">
        {list.data?.map((c) => (
          <article key={c.name} className="connector" aria-labelledby={`connector-${c.name}`}>
            <h2 id={`connector-${c.name}`}>
              {c.name} <span className="muted small">{c.version}</span>
            </h2>
            <p>{c.description}</p>
            <dl>
              {Object.entries(c.actions ?? {}).map(([a, op]) => (
                <div key={`a:${a}`}>
                  <dt>
                    action <code>{a}</code> {op.title && `· ${op.title}`}
                  </dt>
                  <dd className="muted small">{op.description}</dd>
                </div>
              ))}
              {Object.entries(c.triggers ?? {}).map(([t, op]) => (
                <div key={`t:${t}`}>
                  <dt>
                    trigger <code>{t}</code> {op.title && `· ${op.title}`}
                  </dt>
                  <dd className="muted small">{op.description}</dd>
                </div>
              ))}
              {Object.keys(c.credentialTypes ?? {}).map((t) => (
                <div key={`c:${t}`}>
                  <dt>
                    connection type <code>
                      {c.name}.{t}
                    </code>
                  </dt>
                </div>
              ))}
            </dl>
          </article>
        ))}
      </div>
    </section>
  );
}
