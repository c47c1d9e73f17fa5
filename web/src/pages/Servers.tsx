// SMTP servers: health at a glance, the operator's last probe (banner, TLS, reverse DNS,
// blocklist answers), each check's condition, the warm-up curve; adding a relay. And the
// sending domains' mailboxes: where each stands on its warm-up ramp today.
import { useEffect, useRef, useState, type FormEvent } from "react";
// Bars, as the overview draws (a line chart would add Chart.js's line elements to the main
// bundle, which the overview shares Chart.js with).
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip } from "chart.js";
import { all, api, condition, tenantPath, type SendingDomain, type SmtpServer } from "../api/client";
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

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend);

type Warmup = { enabled?: boolean; initialPerDay?: number; dailyIncreasePercent?: number; targetPerDay?: number | null };
type Mailbox = NonNullable<SendingDomain["spec"]["mailboxes"]>[number];

const CHECKS = [
  ["Reachable", "SMTP answers"],
  ["ReverseDNSVerified", "Reverse DNS"],
  ["NotListed", "Blocklists"],
  ["Provisioned", "Provisioned"],
  ["MailStackReady", "Mail stack"],
] as const;
const MAX_DAYS = 60;

/** Messages allowed on each warm-up day up to the cap (as common/throttle.py's
 * warmup_daily_limit computes them), until the cap is reached; 30 days without one. */
export function warmupCurve(warmup: Warmup, cap: number | null): number[] {
  const initial = warmup.initialPerDay ?? 50;
  const growth = 1 + (warmup.dailyIncreasePercent ?? 20) / 100;
  const days: number[] = [];
  for (let day = 0; day < (cap === null ? 30 : MAX_DAYS); day++) {
    const allowed = Math.floor(initial * growth ** day);
    if (cap !== null && allowed >= cap) {
      days.push(cap);
      break;
    }
    days.push(allowed);
  }
  return days;
}

function tone(status: string | undefined): "ok" | "warn" | "bad" | "none" {
  return status === "True" ? "ok" : status === "False" ? "bad" : status === "Unknown" ? "warn" : "none";
}

function health(server: SmtpServer) {
  const ready = condition(server.status, "Ready");
  if (!ready) return <Badge tone="none">Pending</Badge>;
  if (ready.status === "True") return <Badge tone="ok">Healthy</Badge>;
  return <Badge tone="bad">Needs attention</Badge>;
}

export default function Servers({ tenant }: { tenant: string }) {
  const path = tenantPath(tenant, "smtp-servers");
  // Polled: the operator probes servers and writes what it finds into their status.
  const servers = useLoad(() => all<SmtpServer>(path), [path], 5000);
  const domains = useLoad(() => all<SendingDomain>(tenantPath(tenant, "sending-domains")), [tenant], 15000);
  const [error, setError] = useState<unknown>(null);

  async function remove(server: SmtpServer) {
    if (!window.confirm(`Delete the server "${server.name}"? Campaigns stop sending through it.`)) return;
    setError(null);
    try {
      await api("DELETE", `${path}/${encodeURIComponent(server.name)}`);
      await servers.reload();
    } catch (caught) {
      setError(caught);
    }
  }

  return (
    <>
      <PageTitle>SMTP servers</PageTitle>
      <AddRelay path={path} onAdded={() => void servers.reload()} />
      <div className="mt-4">
        <ErrorNotice error={servers.error ?? error} />
      </div>
      {servers.data && servers.data.length === 0 && (
        <Empty title="No SMTP server yet">
          Add the relay you send through above (its host, port and TLS): PenguinMails probes it, checks its
          reverse DNS and the blocklists, and warms it up. Servers PenguinMails provisions itself are
          created through the API (<code className="break-all">POST /v1/tenants/{tenant}/smtp-servers</code>).
        </Empty>
      )}
      {servers.data && servers.data.length > 0 && (
        <>
          <h2 className="sr-only">Servers</h2>
          <Summary servers={servers.data} />
          <ul className="grid gap-4">
            {servers.data.map((s) => (
              <ServerCard key={s.name} server={s} onDelete={() => void remove(s)} />
            ))}
          </ul>
        </>
      )}
      <Mailboxes domains={domains.data} error={domains.error} />
    </>
  );
}

/** Health at a glance: how many servers are ready, need attention or are still pending. */
function Summary({ servers }: { servers: SmtpServer[] }) {
  const ready = servers.map((s) => condition(s.status, "Ready")?.status);
  const healthy = ready.filter((r) => r === "True").length;
  const pending = ready.filter((r) => r === undefined).length;
  const attention = servers.length - healthy - pending;
  return (
    <p className="mb-3 flex flex-wrap items-center gap-2 text-sm" data-testid="servers-summary">
      <span>
        {servers.length} {servers.length === 1 ? "server" : "servers"}:
      </span>
      <Badge tone={healthy ? "ok" : "none"}>{healthy} healthy</Badge>
      <Badge tone={attention ? "bad" : "none"}>{attention} need attention</Badge>
      {pending > 0 && <Badge tone="none">{pending} pending</Badge>}
    </p>
  );
}

function ServerCard({ server, onDelete }: { server: SmtpServer; onDelete: () => void }) {
  const status = server.status;
  const probe = status?.lastProbe;
  const relay = server.spec.provider.relay;
  const provider = status?.provider ?? (relay ? "relay" : server.spec.provider.hostwinds ? "hostwinds" : "mailuInCluster");
  const warmup = server.spec.warmup;
  return (
    <li className="rounded border border-slate-300 bg-white p-4" aria-label={`Server ${server.name}`}>
      <div className="flex flex-wrap items-center gap-2">
        <h3 className="text-lg font-semibold break-all">{server.name}</h3>
        {health(server)}
        {status?.phase && <Badge tone="none">{status.phase}</Badge>}
        <button type="button" className={`${secondaryButtonClass} ml-auto`} onClick={onDelete}>
          Delete {server.name}
        </button>
      </div>
      <dl className="mt-2 grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm sm:grid-cols-[auto_1fr_auto_1fr]">
        <dt className="font-medium">Hostname</dt>
        <dd className="break-all">{server.spec.hostname}</dd>
        <dt className="font-medium">Provider</dt>
        <dd className="break-all">
          {provider}
          {relay && ` (${relay.host}:${relay.port}, TLS ${relay.tls})`}
        </dd>
        <dt className="font-medium">IP address</dt>
        <dd>{status?.ipAddress ?? "not known yet"}</dd>
        <dt className="font-medium">Reverse DNS</dt>
        <dd className="break-all">{status?.reverseDns ?? "—"}</dd>
      </dl>
      <section aria-label={`Last probe of ${server.name}`} className="mt-3">
        <h4 className="font-semibold">Last probe</h4>
        {probe ? (
          <dl className="mt-1 grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
            <dt className="font-medium">When</dt>
            <dd>{new Date(probe.time).toLocaleString()}</dd>
            <dt className="font-medium">Banner</dt>
            <dd className="break-all font-mono" data-testid="probe-banner">
              {probe.banner ?? "none received"}
            </dd>
            <dt className="font-medium">TLS</dt>
            <dd>{probe.tls == null ? "not tried" : probe.tls ? "yes" : "no"}</dd>
            <dt className="font-medium">Reverse DNS confirmed</dt>
            <dd>{probe.forwardConfirmedRdns == null ? "lookup failed" : probe.forwardConfirmedRdns ? "yes" : "no"}</dd>
            <dt className="font-medium">Greeting after</dt>
            <dd>{probe.latencyMs == null ? "—" : `${probe.latencyMs} ms`}</dd>
            <dt className="font-medium">Blocklists</dt>
            <dd className="break-all" data-testid="probe-blocklists">
              {probe.listedOn && probe.listedOn.length > 0 ? `Listed on ${probe.listedOn.join(", ")}` : "Not listed"}
            </dd>
            {probe.error && (
              <>
                <dt className="font-medium">Error</dt>
                <dd className="break-all text-red-800">{probe.error}</dd>
              </>
            )}
          </dl>
        ) : (
          <p className="text-sm text-slate-700">Not probed yet: the operator probes a server once it is provisioned.</p>
        )}
      </section>
      <ScrollBox label={`Checks of ${server.name}`} className="mt-3">
        <table className="w-full text-left text-sm">
          <caption className="sr-only">Checks of {server.name}</caption>
          <thead>
            <tr className="border-b border-slate-300">
              <th scope="col" className="p-2">Check</th>
              <th scope="col" className="p-2">State</th>
              <th scope="col" className="p-2">Details</th>
            </tr>
          </thead>
          <tbody>
            {CHECKS.map(([type, label]) => {
              const c = condition(status, type);
              return (
                <tr key={type} className="border-b border-slate-200 align-top">
                  <th scope="row" className="p-2 font-medium">{label}</th>
                  <td className="p-2">
                    <Badge tone={tone(c?.status)}>{c ? (c.status === "True" ? "OK" : c.status === "False" ? "Failing" : "Unknown") : "Pending"}</Badge>
                  </td>
                  <td className="p-2 break-all">{c?.message ?? ""}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </ScrollBox>
      <section aria-label={`Warm-up of ${server.name}`} className="mt-3">
        <h4 className="font-semibold">Warm-up</h4>
        {warmup && warmup.enabled !== false ? (
          <>
            <p className="text-sm text-slate-700">
              {status?.warmup?.complete
                ? "Complete."
                : status?.warmup?.day != null
                  ? `Day ${status.warmup.day + 1}: ${status.warmup.dailyLimit ?? "no"} messages allowed today.`
                  : `From ${warmup.initialPerDay} messages a day, ${warmup.dailyIncreasePercent}% more each day${warmup.targetPerDay ? `, up to ${warmup.targetPerDay}` : ""}.`}
            </p>
            <WarmupChart
              label={`Planned warm-up of ${server.name}: messages allowed per day`}
              series={[{ label: server.name, days: warmupCurve(warmup, warmup.targetPerDay ?? null), today: status?.warmup?.day ?? null }]}
            />
          </>
        ) : (
          <p className="text-sm text-slate-700">Off: no daily ramp applies to this server.</p>
        )}
      </section>
    </li>
  );
}

const COLOURS = ["#1d4ed8", "#15803d", "#b45309", "#7e22ce", "#be123c", "#0f766e"];
const TODAY = "#0f172a";

function WarmupChart({ label, series }: { label: string; series: { label: string; days: number[]; today: number | null }[] }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const length = Math.max(...series.map((s) => s.days.length));
  // Drawn again only when the curves change, not on every poll of the page.
  const drawn = JSON.stringify(series);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: Array.from({ length }, (_, day) => `Day ${day + 1}`),
        datasets: series.map((s, i) => ({
          label: s.label,
          data: s.days,
          backgroundColor: COLOURS[i % COLOURS.length],
          // Today's bar is outlined: where the ramp stands.
          borderColor: TODAY,
          borderWidth: s.days.map((_, day) => (day === s.today ? 3 : 0)),
        })),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { y: { beginAtZero: true, title: { display: true, text: "messages per day" } } },
      },
    });
    return () => chart.destroy();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [drawn, length]);
  const text = series
    .map((s) => `${s.label}: from ${s.days[0]} to ${s.days[s.days.length - 1]} messages a day over ${s.days.length} days${s.today != null ? `, today day ${s.today + 1}` : ""}`)
    .join("; ");
  return (
    <div className="relative mt-2 h-56">
      <canvas ref={canvas} role="img" aria-label={label}>
        {text}
      </canvas>
    </div>
  );
}

function Mailboxes({ domains, error }: { domains: SendingDomain[] | null; error: unknown }) {
  const withMailboxes = (domains ?? []).filter((d) => (d.spec.mailboxes ?? []).length > 0);
  return (
    <section aria-labelledby="mailboxes-title" className="mt-4 rounded border border-slate-300 bg-white p-4">
      <h2 id="mailboxes-title" className="text-lg font-semibold">
        Mailboxes' warm-up
      </h2>
      <ErrorNotice error={error} />
      {domains && withMailboxes.length === 0 && (
        <p className="mt-2 text-sm text-slate-700">
          No sending domain has mailboxes yet: add them to a domain's <code>spec.mailboxes</code> (each with its
          daily limit and warm-up), and campaigns rotate across them.
        </p>
      )}
      {withMailboxes.map((d) => (
        <DomainMailboxes key={d.name} domain={d} />
      ))}
    </section>
  );
}

function DomainMailboxes({ domain }: { domain: SendingDomain }) {
  const mailboxes: Mailbox[] = domain.spec.mailboxes ?? [];
  const today = new Map((domain.status?.mailboxes ?? []).map((m) => [m.localPart, m]));
  const warming = mailboxes.filter((m) => m.warmup && m.warmup.enabled !== false);
  const series = warming.map((m) => ({
    label: `${m.localPart}@${domain.spec.domain}`,
    days: warmupCurve(m.warmup!, Math.min(m.warmup!.targetPerDay ?? m.dailyLimit, m.dailyLimit)),
    today: today.get(m.localPart)?.warmupDay ?? null,
  }));
  return (
    <div className="mt-3">
      <h3 className="font-semibold break-all">{domain.spec.domain}</h3>
      <ScrollBox label={`Mailboxes of ${domain.spec.domain}`} className="mt-1">
        <table className="w-full text-left text-sm">
          <caption className="sr-only">Mailboxes of {domain.spec.domain} today</caption>
          <thead>
            <tr className="border-b border-slate-300">
              <th scope="col" className="p-2">Mailbox</th>
              <th scope="col" className="p-2">Warm-up day</th>
              <th scope="col" className="p-2 text-right">Allowed today</th>
              <th scope="col" className="p-2 text-right">Once warm</th>
            </tr>
          </thead>
          <tbody>
            {mailboxes.map((m) => {
              const now = today.get(m.localPart);
              return (
                <tr key={m.localPart} className="border-b border-slate-200">
                  <th scope="row" className="p-2 font-medium break-all">
                    {m.localPart}@{domain.spec.domain}
                    {m.paused && " (paused)"}
                  </th>
                  <td className="p-2">{now ? (now.warmupDay != null ? `day ${now.warmupDay + 1}` : "no warm-up") : "not computed yet"}</td>
                  <td className="p-2 text-right tabular-nums">{now ? now.dailyLimit : "—"}</td>
                  <td className="p-2 text-right tabular-nums">{m.dailyLimit}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </ScrollBox>
      {series.length > 0 && <WarmupChart label={`Warm-up of the mailboxes of ${domain.spec.domain}: messages allowed per day`} series={series} />}
    </div>
  );
}

function AddRelay({ path, onAdded }: { path: string; onAdded: () => void }) {
  const [form, setForm] = useState({ name: "", hostname: "", host: "", port: "587", tls: "starttls" });
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const set = (field: keyof typeof form) => (e: { target: { value: string } }) => setForm({ ...form, [field]: e.target.value });

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const port = Number(form.port);
      await api("POST", path, {
        name: form.name.trim(),
        spec: {
          hostname: form.hostname.trim().toLowerCase(),
          provider: { relay: { host: form.host.trim(), port: Number.isInteger(port) && form.port !== "" ? port : form.port, tls: form.tls } },
        },
      });
      setForm({ name: "", hostname: "", host: "", port: "587", tls: "starttls" });
      onAdded();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  const errors = {
    name: fieldError(error, "name"),
    hostname: fieldError(error, "spec.hostname"),
    host: fieldError(error, "spec.provider.relay.host", "spec.provider.relay", "spec.provider"),
    port: fieldError(error, "spec.provider.relay.port"),
    tls: fieldError(error, "spec.provider.relay.tls"),
  };
  const named = Object.values(errors).some(Boolean);
  return (
    <form onSubmit={(e) => void submit(e)} className="rounded border border-slate-300 bg-white p-4" noValidate aria-labelledby="add-relay">
      <h2 id="add-relay" className="mb-2 text-lg font-semibold">
        Add a relay
      </h2>
      <div className="grid gap-3 sm:grid-cols-2 lg:grid-cols-5">
        <Field id="server-name" label="Name" hint="e.g. relay-1" error={errors.name}>
          {(aria) => <input {...aria} name="name" className={inputClass} value={form.name} onChange={set("name")} />}
        </Field>
        <Field id="server-hostname" label="Hostname" hint="The name its IP's reverse DNS points to." error={errors.hostname}>
          {(aria) => <input {...aria} name="hostname" className={inputClass} value={form.hostname} onChange={set("hostname")} />}
        </Field>
        <Field id="server-host" label="Relay host" hint="Host name or IP address." error={errors.host}>
          {(aria) => <input {...aria} name="host" className={inputClass} value={form.host} onChange={set("host")} />}
        </Field>
        <Field id="server-port" label="Port" error={errors.port}>
          {(aria) => <input {...aria} name="port" inputMode="numeric" className={inputClass} value={form.port} onChange={set("port")} />}
        </Field>
        <Field id="server-tls" label="TLS" error={errors.tls}>
          {(aria) => (
            <select {...aria} name="tls" className={inputClass} value={form.tls} onChange={set("tls")}>
              <option value="starttls">STARTTLS</option>
              <option value="tls">Implicit TLS</option>
              <option value="none">None (trusted network only)</option>
            </select>
          )}
        </Field>
      </div>
      <div className="mt-3 flex flex-col gap-2">
        <ErrorNotice error={named ? null : error} />
        <div>
          <button type="submit" className={buttonClass} disabled={busy}>
            Add server
          </button>
        </div>
      </div>
    </form>
  );
}
