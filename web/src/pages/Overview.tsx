// Overview: deliveries per day (Chart.js), usage against the plan's allowance, and the health
// of every domain and server at a glance; all from the customer API.
import { useEffect, useRef } from "react";
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  Tooltip,
} from "chart.js";
import {
  ApiError,
  all,
  api,
  condition,
  tenantPath,
  type Campaign,
  type SendingDomain,
  type SmtpServer,
  type Usage,
} from "../api/client";
import { Badge, Empty, ErrorNotice, PageTitle, useLoad } from "../components/ui";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend);

interface Day {
  day: string;
  sent: number;
  bounced: number;
  complained: number;
}

/** Per day, from what the API offers today: each campaign's counters on the day it started
 * (the API has no per-day series yet; see docs/dashboard.md). */
export function perDay(campaigns: Campaign[]): Day[] {
  const days = new Map<string, Day>();
  for (const c of campaigns) {
    const started = c.status?.startedAt;
    const counts = c.status?.counts;
    if (!started || !counts) continue;
    const day = started.slice(0, 10);
    const row = days.get(day) ?? { day, sent: 0, bounced: 0, complained: 0 };
    row.sent += counts.sent ?? 0;
    row.bounced += counts.bounced ?? 0;
    row.complained += counts.complained ?? 0;
    days.set(day, row);
  }
  return [...days.values()].sort((a, b) => a.day.localeCompare(b.day));
}

function DeliveriesChart({ days }: { days: Day[] }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: days.map((d) => d.day),
        datasets: [
          { label: "Delivered", data: days.map((d) => d.sent), backgroundColor: "#15803d" },
          { label: "Bounced", data: days.map((d) => d.bounced), backgroundColor: "#b91c1c" },
          { label: "Complaints", data: days.map((d) => d.complained), backgroundColor: "#a16207" },
        ],
      },
      options: { responsive: true, maintainAspectRatio: false, animation: false },
    });
    return () => chart.destroy();
  }, [days]);
  return (
    <div className="relative h-64">
      <canvas ref={canvas} role="img" aria-label="Delivered, bounced and complaints per day">
        {days.map((d) => `${d.day}: ${d.sent} delivered, ${d.bounced} bounced`).join("; ")}
      </canvas>
    </div>
  );
}

function health(status: { conditions?: { type: string; status: string }[] } | null | undefined) {
  const ready = condition(status as never, "Ready");
  if (!ready) return <Badge tone="none">Pending</Badge>;
  if (ready.status === "True") return <Badge tone="ok">Healthy</Badge>;
  return <Badge tone="bad">Needs attention</Badge>;
}

async function usageOrNull(tenant: string): Promise<Usage | null> {
  try {
    return await api<Usage>("GET", tenantPath(tenant, "billing/usage"));
  } catch (error) {
    // Billing off (no route) or no plan yet: the overview shows no usage bar.
    if (error instanceof ApiError && (error.status === 404 || error.status === 403)) return null;
    throw error;
  }
}

export default function Overview({ tenant }: { tenant: string }) {
  const campaigns = useLoad(() => all<Campaign>(tenantPath(tenant, "campaigns")), [tenant], 10000);
  const domains = useLoad(() => all<SendingDomain>(tenantPath(tenant, "sending-domains")), [tenant]);
  const servers = useLoad(() => all<SmtpServer>(tenantPath(tenant, "smtp-servers")), [tenant]);
  const usage = useLoad(() => usageOrNull(tenant), [tenant]);
  const days = campaigns.data ? perDay(campaigns.data) : [];

  return (
    <>
      <PageTitle>Overview</PageTitle>
      <div className="grid gap-4 lg:grid-cols-3">
        <section aria-labelledby="deliveries" className="rounded border border-slate-300 bg-white p-4 lg:col-span-2">
          <h2 id="deliveries" className="mb-2 font-semibold">
            Deliveries per day
          </h2>
          <ErrorNotice error={campaigns.error} />
          {campaigns.data && days.length === 0 && (
            <Empty title="Nothing sent yet">
              Add a <a className="text-blue-800 underline" href="#/domains">sending domain</a>, then start a
              campaign: its deliveries appear here.
            </Empty>
          )}
          {days.length > 0 && <DeliveriesChart days={days} />}
        </section>
        <section aria-labelledby="usage" className="rounded border border-slate-300 bg-white p-4">
          <h2 id="usage" className="mb-2 font-semibold">
            Usage this month
          </h2>
          <ErrorNotice error={usage.error} />
          {usage.data === null && !usage.error && <p className="text-sm text-slate-700">No plan allowance to show.</p>}
          {usage.data && <UsageBar usage={usage.data} />}
        </section>
      </div>
      <div className="mt-4 grid gap-4 md:grid-cols-2">
        <HealthList
          title="Sending domains"
          emptyTitle="No sending domain"
          items={domains.data}
          error={domains.error}
          empty={<>No sending domain yet: <a className="text-blue-800 underline" href="#/domains">add one</a> to start sending.</>}
        />
        <HealthList
          title="SMTP servers"
          emptyTitle="No SMTP server"
          items={servers.data}
          error={servers.error}
          empty={
            <>
              Add the server you send through with the API:{" "}
              <code className="break-all">POST /v1/tenants/{tenant}/smtp-servers</code>.
            </>
          }
        />
      </div>
    </>
  );
}

function UsageBar({ usage }: { usage: Usage }) {
  const percent = Math.min(100, Math.round(usage.percentUsed));
  return (
    <div>
      <p className="text-sm">
        {usage.emailsSent.toLocaleString()} of {usage.emailsPerMonth.toLocaleString()} messages
        ({usage.tier} plan{usage.overageAllowed ? ", overage allowed" : ""})
      </p>
      <div
        role="progressbar"
        aria-label="Usage of the monthly allowance"
        aria-valuenow={percent}
        aria-valuemin={0}
        aria-valuemax={100}
        className="mt-2 h-3 rounded bg-slate-200"
      >
        <div
          className={`h-3 rounded ${percent >= 90 ? "bg-red-700" : "bg-blue-700"}`}
          style={{ width: `${percent}%` }}
        />
      </div>
    </div>
  );
}

function HealthList(props: {
  title: string;
  emptyTitle: string;
  items: (SendingDomain | SmtpServer)[] | null;
  error: unknown;
  empty: React.ReactNode;
}) {
  return (
    <section className="rounded border border-slate-300 bg-white p-4" aria-label={props.title}>
      <h2 className="mb-2 font-semibold">{props.title}</h2>
      <ErrorNotice error={props.error} />
      {props.items && props.items.length === 0 && <Empty title={props.emptyTitle}>{props.empty}</Empty>}
      {props.items && props.items.length > 0 && (
        <ul className="divide-y divide-slate-200">
          {props.items.map((item) => (
            <li key={item.name} className="flex items-center justify-between gap-2 py-2">
              <span className="break-all">{item.name}</span>
              {health(item.status)}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
