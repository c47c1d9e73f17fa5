// Settings → Webhooks: endpoints (created with their signing secret shown once, the events they
// receive, disable and enable, delete) and each endpoint's delivery log with its attempts.
import { useState, type FormEvent } from "react";
import {
  all,
  api,
  tenantPath,
  type EventType,
  type WebhookDelivery,
  type WebhookEndpoint,
  type WebhookEndpointCreated,
} from "../../api/client";
import { SettingsNav } from "../../components/settings";
import {
  Badge,
  CopyButton,
  Empty,
  ErrorNotice,
  Field,
  PageTitle,
  ScrollBox,
  buttonClass,
  fieldError,
  inputClass,
  secondaryButtonClass,
  useLoad,
} from "../../components/ui";

const EVENTS: { type: EventType; about: string }[] = [
  { type: "delivery.bounced", about: "a message bounced" },
  { type: "delivery.complained", about: "a recipient complained" },
  { type: "delivery.unsubscribed", about: "a recipient unsubscribed" },
  { type: "delivery.replied", about: "a recipient replied (auto-replies excluded)" },
  { type: "campaign.state_changed", about: "a campaign started, paused, stopped or completed" },
  { type: "usage.threshold", about: "the month's usage reached 80, 95 or 100% of the plan" },
  { type: "delivery.delivered", about: "a relay accepted a message (not sent yet by this version)" },
];

export default function Webhooks({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "webhook-endpoints");
  const endpoints = useLoad(() => all<WebhookEndpoint>(path), [path]);
  const [created, setCreated] = useState<WebhookEndpointCreated | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function change(call: () => Promise<unknown>) {
    setError(null);
    try {
      await call();
    } catch (caught) {
      setError(caught);
    }
    await endpoints.reload();
  }

  return (
    <>
      <PageTitle>Webhooks</PageTitle>
      <SettingsNav current="settings/webhooks" />
      <CreateEndpoint
        path={path}
        onCreated={(made) => {
          setCreated(made);
          setOpen(made.id);
          void endpoints.reload();
        }}
      />
      {created && (
        <section aria-labelledby="new-secret" role="status" className="mt-4 rounded border border-green-400 bg-green-50 p-4">
          <h2 id="new-secret" className="font-semibold">
            Signing secret of {created.url}
          </h2>
          <p className="text-sm">
            Copy it into your receiver now: it is shown this once. Verify each request's{" "}
            <code>webhook-signature</code> with it (the Standard Webhooks scheme).
          </p>
          <div className="mt-2 flex flex-wrap items-center gap-2">
            <code data-testid="webhook-secret" className="break-all rounded bg-white p-2">
              {created.secret}
            </code>
            <CopyButton text={created.secret} label="the signing secret" />
            <button type="button" className={secondaryButtonClass} onClick={() => setCreated(null)}>
              Done
            </button>
          </div>
        </section>
      )}
      <ErrorNotice error={endpoints.error ?? error} />
      <h2 className="mb-2 mt-6 text-lg font-semibold">Endpoints</h2>
      {endpoints.data && endpoints.data.length === 0 && (
        <Empty title="No webhook endpoint yet">
          Add the URL of a receiver above to be told of bounces, complaints, unsubscribes and campaign changes as they
          happen.
        </Empty>
      )}
      <ul className="flex flex-col gap-3">
        {endpoints.data?.map((e) => (
          <li key={e.id} aria-label={`Endpoint ${e.url}`} className="rounded border border-slate-300 bg-white p-3">
            <div className="flex flex-wrap items-center gap-2">
              <span className="break-all font-mono text-sm">{e.url}</span>
              {e.enabled ? <Badge tone="ok">Enabled</Badge> : <Badge tone="warn">Disabled</Badge>}
            </div>
            {e.description && <p className="text-sm text-slate-700">{e.description}</p>}
            <p className="mt-1 text-sm">Events: {e.eventTypes.join(", ")}</p>
            <div className="mt-2 flex flex-wrap gap-2">
              <button
                type="button"
                className={secondaryButtonClass}
                aria-expanded={open === e.id}
                onClick={() => setOpen(open === e.id ? null : e.id)}
              >
                {open === e.id ? "Hide deliveries" : "Show deliveries"}
                <span className="sr-only"> of {e.url}</span>
              </button>
              <button
                type="button"
                className={secondaryButtonClass}
                onClick={() => void change(() => api("PATCH", `${path}/${e.id}`, { enabled: !e.enabled }))}
              >
                {e.enabled ? "Disable" : "Enable"}
                <span className="sr-only"> {e.url}</span>
              </button>
              <button
                type="button"
                className={secondaryButtonClass}
                onClick={() => {
                  if (!window.confirm(`Delete the endpoint ${e.url} and its delivery log?`)) return;
                  void change(() => api("DELETE", `${path}/${e.id}`));
                }}
              >
                Delete
                <span className="sr-only"> {e.url}</span>
              </button>
            </div>
            {open === e.id && <Deliveries tenant={tenant} endpoint={e} />}
          </li>
        ))}
      </ul>
    </>
  );
}

function Deliveries({ tenant, endpoint }: { tenant: string; endpoint: WebhookEndpoint }) {
  const path = tenantPath(tenant, `webhook-endpoints/${endpoint.id}/deliveries?limit=50`);
  // Polled: a delivery appears, then its attempts, as the dispatcher works.
  const deliveries = useLoad(() => api<{ data: WebhookDelivery[] }>("GET", path), [path], 3000);
  const [error, setError] = useState<unknown>(null);

  async function redeliver(id: number) {
    setError(null);
    try {
      await api("POST", tenantPath(tenant, `webhook-deliveries/${id}/redeliver`));
      await deliveries.reload();
    } catch (caught) {
      setError(caught);
    }
  }

  const rows = deliveries.data?.data ?? [];
  return (
    <div className="mt-3">
      <ErrorNotice error={deliveries.error ?? error} />
      {deliveries.data && rows.length === 0 && (
        <p className="text-sm text-slate-700">No delivery yet: events appear here as they are sent.</p>
      )}
      {rows.length > 0 && (
        <ScrollBox label={`Deliveries to ${endpoint.url}`} className="rounded border border-slate-200">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Deliveries to {endpoint.url}</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className="p-2">Event</th>
                <th scope="col" className="p-2">Status</th>
                <th scope="col" className="p-2">Attempts</th>
                <th scope="col" className="p-2">Response</th>
                <th scope="col" className="p-2">Created</th>
                <th scope="col" className="p-2"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {rows.map((d) => {
                const last = d.attempts[d.attempts.length - 1];
                const tone = d.state === "succeeded" ? "ok" : d.state === "failed" ? "bad" : "warn";
                return (
                  <tr key={d.id} className="border-b border-slate-200 align-top">
                    <td className="p-2">{d.eventType}</td>
                    <td className="p-2">
                      <Badge tone={tone}>{d.state}</Badge>
                      {d.state === "pending" && d.attempts.length > 0 && (
                        <div className="text-xs text-slate-700">next try {new Date(d.nextAttemptAt).toLocaleTimeString()}</div>
                      )}
                    </td>
                    <td className="p-2">{d.attempts.length}</td>
                    <td className="p-2">
                      {last ? (
                        <>
                          {last.statusCode ?? "no answer"}
                          {last.error && <div className="text-xs text-red-800">{last.error}</div>}
                          <div className="text-xs text-slate-700">{last.latencyMs} ms</div>
                        </>
                      ) : (
                        "not sent yet"
                      )}
                    </td>
                    <td className="p-2 whitespace-nowrap">{new Date(d.createdAt).toLocaleString()}</td>
                    <td className="p-2">
                      <button type="button" className={secondaryButtonClass} onClick={() => void redeliver(d.id)}>
                        Send again<span className="sr-only"> delivery {d.id}</span>
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </div>
  );
}

function CreateEndpoint({ path, onCreated }: { path: string; onCreated: (made: WebhookEndpointCreated) => void }) {
  const [url, setUrl] = useState("");
  const [description, setDescription] = useState("");
  const [events, setEvents] = useState<EventType[]>(["delivery.bounced", "delivery.complained", "campaign.state_changed"]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = { url: url.trim(), eventTypes: events, description: description.trim() || null };
      onCreated(await api<WebhookEndpointCreated>("POST", path, body));
      setUrl("");
      setDescription("");
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const urlError = fieldError(error, "url");
  const eventsError = fieldError(error, "eventTypes");
  const descriptionError = fieldError(error, "description");
  return (
    <form onSubmit={(e) => void submit(e)} className="flex flex-col gap-3 rounded border border-slate-300 bg-white p-4" noValidate>
      <Field id="webhook-url" label="Endpoint URL" hint="Where events are POSTed, e.g. https://example.com/hooks." error={urlError}>
        {(aria) => <input {...aria} type="url" name="url" className={inputClass} value={url} onChange={(e) => setUrl(e.target.value)} />}
      </Field>
      <Field id="webhook-description" label="Description (optional)" error={descriptionError}>
        {(aria) => (
          <input {...aria} name="description" className={inputClass} value={description} onChange={(e) => setDescription(e.target.value)} />
        )}
      </Field>
      <fieldset aria-describedby={eventsError ? "events-error" : undefined}>
        <legend className="text-sm font-medium">Events to receive</legend>
        <div className="mt-1 flex flex-col gap-1">
          {EVENTS.map((e) => (
            <label key={e.type} className="flex items-start gap-2 text-sm">
              <input
                type="checkbox"
                className="mt-1"
                checked={events.includes(e.type)}
                onChange={(change) =>
                  setEvents((now) => (change.target.checked ? [...now, e.type] : now.filter((t) => t !== e.type)))
                }
              />
              <span>
                <code>{e.type}</code>: {e.about}
              </span>
            </label>
          ))}
        </div>
        {eventsError && (
          <p id="events-error" role="alert" className="text-sm text-red-700">
            {eventsError}
          </p>
        )}
      </fieldset>
      <ErrorNotice error={urlError || eventsError || descriptionError ? null : error} />
      <div>
        <button type="submit" className={buttonClass} disabled={busy}>
          Add endpoint
        </button>
      </div>
    </form>
  );
}
