// Overview: deliveries and replies per day (Chart.js, from the API's per-day series of the ledger), usage
// against the plan's allowance, and the health of every domain and server at a glance; all
// from the customer API's overview operation, one request.
import { lazy, Suspense, useEffect } from "react";
import { api, signedIn, tenantPath, type Condition, type DeliveryDay, type Health, type OverviewData, type Usage } from "../api/client";
import { Badge, Empty, ErrorNotice, PageTitle, ScrollBox, useLoad } from "../components/ui";

// Chart.js in its own chunk, fetched as the page mounts, alongside the API's answers.
const loadChart = () => import("../components/DeliveriesChart");
const DeliveriesChart = lazy(loadChart);
// Signed in and opening the overview: ask for the chart's chunk as soon as this script runs,
// not after the first render.
if (signedIn() && /^(#\/?(overview)?)?$/.test(window.location.hash)) void loadChart();

function health(ready: Condition | null | undefined) {
  if (!ready) return <Badge tone="none">Pending</Badge>;
  if (ready.status === "True") return <Badge tone="ok">Healthy</Badge>;
  return <Badge tone="bad">Needs attention</Badge>;
}

function Totals({ days }: { days: DeliveryDay[] }) {
  const sum = (key: "sent" | "delivered" | "bounced" | "complaints" | "replies") =>
    days.reduce((n, d) => n + d[key], 0).toLocaleString();
  const figures = [
    ["Sent", sum("sent")],
    ["Delivered", sum("delivered")],
    ["Bounced", sum("bounced")],
    ["Complaints", sum("complaints")],
    ["Replies", sum("replies")],
  ];
  return (
    <dl className="mb-3 grid grid-cols-2 gap-2 sm:grid-cols-5">
      {figures.map(([label, value]) => (
        <div key={label} className="rounded bg-slate-100 p-2">
          <dt className="text-xs text-slate-700">{label}</dt>
          <dd className="text-lg font-semibold" data-testid={`total-${label.toLowerCase()}`}>
            {value}
          </dd>
        </div>
      ))}
    </dl>
  );
}

function DayTable({ days }: { days: DeliveryDay[] }) {
  const busy = days.filter((d) => d.sent || d.bounced || d.complaints || d.replies);
  return (
    <details className="mt-3">
      <summary className="cursor-pointer text-sm font-medium">Figures per day</summary>
      <ScrollBox label="Figures per day" className="mt-2">
        <table className="w-full text-left text-sm">
          <caption className="sr-only">Deliveries per day (days with activity)</caption>
          <thead>
            <tr className="border-b border-slate-300">
              <th scope="col" className="p-1">Day</th>
              <th scope="col" className="p-1">Sent</th>
              <th scope="col" className="p-1">Delivered</th>
              <th scope="col" className="p-1">Bounced</th>
              <th scope="col" className="p-1">Complaints</th>
              <th scope="col" className="p-1">Replies</th>
            </tr>
          </thead>
          <tbody>
            {busy.map((d) => (
              <tr key={d.day} className="border-b border-slate-200">
                <th scope="row" className="p-1 font-normal">{d.day}</th>
                <td className="p-1">{d.sent}</td>
                <td className="p-1">{d.delivered}</td>
                <td className="p-1">{d.bounced}</td>
                <td className="p-1">{d.complaints}</td>
                <td className="p-1">{d.replies}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </ScrollBox>
    </details>
  );
}

export default function Overview({ tenant }: { tenant: string }) {
  useEffect(() => void loadChart(), []);
  // One request for the whole page (api/http/routes/overview.py), refreshed every 30 s.
  const overview = useLoad(() => api<OverviewData>("GET", tenantPath(tenant, "overview")), [tenant], 30000);
  const data = overview.data;
  const series = data?.deliveries;
  const days = series?.data ?? [];
  const anything = days.some((d) => d.sent || d.bounced || d.complaints || d.replies);

  return (
    <>
      <PageTitle>Overview</PageTitle>
      <div className="grid gap-4 lg:grid-cols-3">
        <section aria-labelledby="deliveries" className="rounded border border-slate-300 bg-white p-4 lg:col-span-2">
          <h2 id="deliveries" className="mb-2 font-semibold">
            Deliveries per day
          </h2>
          <ErrorNotice error={overview.error} />
          {series && !anything && (
            <Empty title="Nothing sent in the last 30 days">
              Add a <a className="text-blue-800 underline" href="#/domains">sending domain</a>, then start a
              campaign: its deliveries appear here.
            </Empty>
          )}
          {anything && (
            <>
              <p className="mb-2 text-sm text-slate-700">
                {series?.since} to {series?.until} (UTC)
              </p>
              <Totals days={days} />
              <Suspense fallback={<div className="h-64" aria-hidden="true" />}>
                <DeliveriesChart days={days} />
              </Suspense>
              <DayTable days={days} />
            </>
          )}
        </section>
        <section aria-labelledby="usage" className="rounded border border-slate-300 bg-white p-4">
          <h2 id="usage" className="mb-2 font-semibold">
            Usage this month
          </h2>
          {data && <UsageBar usage={data.usage} />}
        </section>
      </div>
      <div className="mt-4 grid gap-4 md:grid-cols-2">
        <HealthList
          title="Sending domains"
          emptyTitle="No sending domain"
          items={data?.sendingDomains ?? null}
          empty={<>No sending domain yet: <a className="text-blue-800 underline" href="#/domains">add one</a> to start sending.</>}
        />
        <HealthList
          title="SMTP servers"
          emptyTitle="No SMTP server"
          items={data?.smtpServers ?? null}
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
  items: Health[] | null;
  empty: React.ReactNode;
}) {
  return (
    <section className="rounded border border-slate-300 bg-white p-4" aria-label={props.title}>
      <h2 className="mb-2 font-semibold">{props.title}</h2>
      {props.items && props.items.length === 0 && <Empty title={props.emptyTitle}>{props.empty}</Empty>}
      {props.items && props.items.length > 0 && (
        <ul className="divide-y divide-slate-200">
          {props.items.map((item) => (
            <li key={item.name} className="flex items-center justify-between gap-2 py-2">
              <span className="break-all">{item.name}</span>
              {health(item.ready)}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
