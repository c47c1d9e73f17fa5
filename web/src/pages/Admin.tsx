// The platform administrators' pages (shown only to them; the API refuses everyone else):
// tenants (tier, usage, suspend with a reason, resume, change tier), plans, the deliveries
// waiting per tenant and server, and every SMTP server's health. All from /v1/admin.
import { useState, type FormEvent } from "react";
import {
  all,
  api,
  condition,
  type AdminPlan,
  type AdminSmtpServer,
  type AdminTenant,
  type TenantQueue,
} from "../api/client";
import {
  Badge,
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
} from "../components/ui";

const TIERS = ["starter", "professional", "business", "enterprise"] as const;
const th = "p-2 whitespace-nowrap";

function when(at: string | null | undefined): string {
  return at ? new Date(at).toLocaleString() : "—";
}

export function AdminTenants() {
  const tenants = useLoad(() => all<AdminTenant>("/v1/admin/tenants"), []);
  const [error, setError] = useState<unknown>(null);
  const [suspending, setSuspending] = useState<string | null>(null);

  async function act(run: () => Promise<unknown>) {
    setError(null);
    try {
      await run();
      await tenants.reload();
    } catch (caught) {
      setError(caught);
    }
  }

  return (
    <>
      <PageTitle>Tenants</PageTitle>
      <ErrorNotice error={tenants.error ?? error} />
      {tenants.data && tenants.data.length === 0 && (
        <Empty title="No tenant yet">Tenants appear here once their Tenant resource exists.</Empty>
      )}
      {suspending && (
        <SuspendForm
          tenant={suspending}
          onDone={() => {
            setSuspending(null);
            void tenants.reload();
          }}
          onCancel={() => setSuspending(null)}
        />
      )}
      {tenants.data && tenants.data.length > 0 && (
        <ScrollBox label="Tenants" className="mt-4 rounded border border-slate-300 bg-white">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Tenants</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className={th}>Tenant</th>
                <th scope="col" className={th}>Tier</th>
                <th scope="col" className={th}>Sent this month</th>
                <th scope="col" className={th}>State</th>
                <th scope="col" className={th}><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {tenants.data.map((t) => (
                <tr key={t.name} className="border-b border-slate-200 align-top">
                  <th scope="row" className="p-2 font-medium">{t.name}</th>
                  <td className="p-2">
                    <label className="sr-only" htmlFor={`tier-${t.name}`}>
                      Tier of {t.name}
                    </label>
                    <select
                      id={`tier-${t.name}`}
                      className="rounded border border-slate-400 px-2 py-1"
                      value={t.tier ?? ""}
                      onChange={(e) =>
                        void act(() => api("PATCH", `/v1/admin/tenants/${t.name}`, { tier: e.target.value }))
                      }
                    >
                      {TIERS.map((tier) => (
                        <option key={tier} value={tier}>
                          {tier}
                        </option>
                      ))}
                    </select>
                  </td>
                  <td className="p-2">{t.emailsSentThisMonth?.toLocaleString() ?? "—"}</td>
                  <td className="p-2">
                    {t.suspended ? (
                      <>
                        <Badge tone="bad">Suspended</Badge>
                        <p className="mt-1 text-xs">{t.suspendReason}</p>
                      </>
                    ) : (
                      <Badge tone="ok">Active</Badge>
                    )}
                  </td>
                  <td className="p-2">
                    {t.suspended ? (
                      <button
                        type="button"
                        className={secondaryButtonClass}
                        onClick={() => void act(() => api("POST", `/v1/admin/tenants/${t.name}/resume`))}
                      >
                        Resume {t.name}
                      </button>
                    ) : (
                      <button type="button" className={secondaryButtonClass} onClick={() => setSuspending(t.name)}>
                        Suspend {t.name}
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </>
  );
}

function SuspendForm(props: { tenant: string; onDone: () => void; onCancel: () => void }) {
  const [reason, setReason] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("POST", `/v1/admin/tenants/${props.tenant}/suspend`, { reason });
      props.onDone();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const reasonError = fieldError(error, "reason");
  return (
    <form
      onSubmit={(e) => void submit(e)}
      aria-label={`Suspend ${props.tenant}`}
      className="mt-4 flex flex-col gap-3 rounded border border-red-300 bg-white p-4"
      noValidate
    >
      <p className="font-medium">Suspend {props.tenant}: its senders stop and it can only read.</p>
      <Field id="suspend-reason" label="Reason" hint="One line, shown to the customer." error={reasonError}>
        {(aria) => (
          <input {...aria} name="reason" className={inputClass} value={reason} onChange={(e) => setReason(e.target.value)} />
        )}
      </Field>
      <ErrorNotice error={reasonError ? null : error} />
      <div className="flex gap-2">
        <button type="submit" className={buttonClass} disabled={busy}>
          Confirm suspension
        </button>
        <button type="button" className={secondaryButtonClass} onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export function AdminPlans() {
  const plans = useLoad(() => api<{ data: AdminPlan[] }>("GET", "/v1/admin/plans"), []);
  return (
    <>
      <PageTitle>Plans</PageTitle>
      <ErrorNotice error={plans.error} />
      {plans.data && plans.data.data.length === 0 && (
        <Empty title="No plan yet">
          Without plans each tier's built-in allowance applies. Add one with{" "}
          <code className="break-all">PUT /v1/admin/plans/&lt;tier&gt;</code> (its Stripe prices and allowance).
        </Empty>
      )}
      {plans.data && plans.data.data.length > 0 && (
        <ScrollBox label="Plans" className="rounded border border-slate-300 bg-white">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Plans</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className={th}>Tier</th>
                <th scope="col" className={th}>Messages per month</th>
                <th scope="col" className={th}>Overage</th>
                <th scope="col" className={th}>Monthly price</th>
                <th scope="col" className={th}>Yearly price</th>
              </tr>
            </thead>
            <tbody>
              {plans.data.data.map((p) => (
                <tr key={p.tier} className="border-b border-slate-200">
                  <th scope="row" className="p-2 font-medium">{p.tier}</th>
                  <td className="p-2">{p.emailsPerMonth.toLocaleString()}</td>
                  <td className="p-2">{p.overageAllowed ? "Allowed" : "Stops at the allowance"}</td>
                  <td className="p-2 font-mono">{p.priceMonthly}</td>
                  <td className="p-2 font-mono">{p.priceYearly ?? "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </>
  );
}

export function AdminQueues() {
  const queues = useLoad(() => api<{ data: TenantQueue[] }>("GET", "/v1/admin/queues"), [], 5000);
  const rows = queues.data?.data ?? [];
  return (
    <>
      <PageTitle>Queues</PageTitle>
      <p className="mb-3 text-sm text-slate-700">
        Deliveries not final yet, per tenant and per server (the server that last had a deferred one; "not
        assigned" until a sender claims it).
      </p>
      <ErrorNotice error={queues.error} />
      {queues.data && rows.length === 0 && <Empty title="No tenant yet">Nothing is waiting anywhere.</Empty>}
      {rows.length > 0 && (
        <ScrollBox label="Queues" className="rounded border border-slate-300 bg-white">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">Deliveries waiting per tenant and server</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className={th}>Tenant / server</th>
                <th scope="col" className={th}>Queued</th>
                <th scope="col" className={th}>Deferred</th>
                <th scope="col" className={th}>Sending</th>
                <th scope="col" className={th}>Next due</th>
              </tr>
            </thead>
            <tbody>
              {rows.flatMap((t) => [
                <tr key={t.tenant} className="border-b border-slate-200 bg-slate-50">
                  <th scope="row" className="p-2 font-semibold">{t.tenant}</th>
                  <td className="p-2" data-testid={`queued-${t.tenant}`}>{t.queued}</td>
                  <td className="p-2">{t.deferred}</td>
                  <td className="p-2">{t.sending}</td>
                  <td className="p-2">{when(t.nextDue)}</td>
                </tr>,
                ...t.servers.map((s) => (
                  <tr key={`${t.tenant}/${s.server ?? ""}`} className="border-b border-slate-200">
                    <th scope="row" className="p-2 pl-6 font-normal">
                      {s.server ?? "not assigned"}
                    </th>
                    <td className="p-2">{s.queued}</td>
                    <td className="p-2">{s.deferred}</td>
                    <td className="p-2">{s.sending}</td>
                    <td className="p-2">{when(s.nextDue)}</td>
                  </tr>
                )),
              ])}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </>
  );
}

function serverHealth(s: AdminSmtpServer) {
  const ready = condition(s.status, "Ready");
  if (!ready) return <Badge tone="none">Pending</Badge>;
  if (ready.status === "True") return <Badge tone="ok">Healthy</Badge>;
  return <Badge tone="bad">Needs attention</Badge>;
}

export function AdminInfrastructure() {
  const servers = useLoad(() => all<AdminSmtpServer>("/v1/admin/smtp-servers"), [], 10000);
  return (
    <>
      <PageTitle>Infrastructure</PageTitle>
      <ErrorNotice error={servers.error} />
      {servers.data && servers.data.length === 0 && (
        <Empty title="No SMTP server yet">Tenants' SmtpServer resources appear here with their probes.</Empty>
      )}
      {servers.data && servers.data.length > 0 && (
        <ScrollBox label="SMTP servers" className="rounded border border-slate-300 bg-white">
          <table className="w-full text-left text-sm">
            <caption className="sr-only">SMTP servers of every tenant</caption>
            <thead>
              <tr className="border-b border-slate-300">
                <th scope="col" className={th}>Server</th>
                <th scope="col" className={th}>Tenant</th>
                <th scope="col" className={th}>Health</th>
                <th scope="col" className={th}>Phase</th>
                <th scope="col" className={th}>Last probe</th>
                <th scope="col" className={th}>Why</th>
              </tr>
            </thead>
            <tbody>
              {servers.data.map((s) => {
                const probe = s.status?.lastProbe;
                const ready = condition(s.status, "Ready");
                return (
                  <tr key={`${s.namespace}/${s.name}`} className="border-b border-slate-200 align-top">
                    <th scope="row" className="p-2 font-medium">
                      {s.name}
                      <span className="block text-xs font-normal text-slate-700">{s.hostname}</span>
                    </th>
                    <td className="p-2">{s.tenant ?? s.namespace}</td>
                    <td className="p-2">{serverHealth(s)}</td>
                    <td className="p-2">{s.status?.phase ?? "—"}</td>
                    <td className="p-2">
                      {probe ? (
                        <>
                          {when(probe.time)}
                          {probe.listedOn && probe.listedOn.length > 0 && (
                            <span className="block text-red-800">Listed on {probe.listedOn.join(", ")}</span>
                          )}
                          {probe.error && <span className="block text-red-800">{probe.error}</span>}
                        </>
                      ) : (
                        "—"
                      )}
                    </td>
                    <td className="p-2">{ready && ready.status !== "True" ? ready.message : ""}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </ScrollBox>
      )}
    </>
  );
}
