// Settings → Billing: the plan and this month's usage against its allowance, the invoices, and
// the links to Stripe (the Customer Portal for a subscribed tenant, Checkout for one that is
// not). Stripe's pages are opened from a link made on request: its sessions are short-lived.
import { useState } from "react";
import { ApiError, api, tenantPath, type Invoice, type Schemas, type Usage } from "../../api/client";
import { SettingsNav } from "../../components/settings";
import { Empty, ErrorNotice, PageTitle, ScrollBox, buttonClass, secondaryButtonClass, useLoad } from "../../components/ui";

type Plan = Schemas["penguinmails__api__http__routes__billing__PlanOut"];

const number = new Intl.NumberFormat();

function money(cents: number, currency: string): string {
  return new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() }).format(cents / 100);
}

export default function Billing({ tenant }: { tenant: string }) {
  const base = tenantPath(tenant, "billing");
  const usage = useLoad(() => api<Usage>("GET", `${base}/usage`), [base]);
  const invoices = useLoad(() => api<{ data: Invoice[] }>("GET", `${base}/invoices`), [base]);
  const plans = useLoad(() => api<Plan[]>("GET", "/v1/billing/plans"), []);

  // Billing is mounted only when the installation runs with Stripe: without it, its routes are
  // the API's 404 route_missing.
  const off = [usage.error, plans.error].some((e) => e instanceof ApiError && e.body.code === "route_missing");
  return (
    <>
      <PageTitle>Billing</PageTitle>
      <SettingsNav current="settings/billing" />
      {off ? (
        <Empty title="Billing is not on for this installation">
          Sending is limited by your plan's allowance only; ask the platform's operators about plans.
        </Empty>
      ) : (
        <>
          <ErrorNotice error={usage.error ?? invoices.error} />
          {usage.data && <PlanUsage usage={usage.data} />}
          <Stripe base={base} plans={plans.data ?? []} />
          <h2 className="mb-2 mt-6 text-lg font-semibold">Invoices</h2>
          {invoices.data && invoices.data.data.length === 0 && (
            <Empty title="No invoice yet">Invoices appear here once a subscription has been billed.</Empty>
          )}
          {invoices.data && invoices.data.data.length > 0 && (
            <ScrollBox label="Invoices" className="rounded border border-slate-300 bg-white">
              <table className="w-full text-left text-sm">
                <caption className="sr-only">Invoices</caption>
                <thead>
                  <tr className="border-b border-slate-300">
                    <th scope="col" className="p-2">Number</th>
                    <th scope="col" className="p-2">Date</th>
                    <th scope="col" className="p-2">Amount</th>
                    <th scope="col" className="p-2">Status</th>
                    <th scope="col" className="p-2"><span className="sr-only">Links</span></th>
                  </tr>
                </thead>
                <tbody>
                  {invoices.data.data.map((i) => (
                    <tr key={i.id} className="border-b border-slate-200">
                      <td className="p-2">{i.number ?? i.id}</td>
                      <td className="p-2">{new Date(i.created).toLocaleDateString()}</td>
                      <td className="p-2">{money(i.amountDue, i.currency)}</td>
                      <td className="p-2">{i.status ?? "unknown"}</td>
                      <td className="p-2">
                        {i.hostedInvoiceUrl && (
                          <a className="text-blue-800 underline" href={i.hostedInvoiceUrl} rel="noreferrer">
                            View invoice {i.number ?? i.id}
                          </a>
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </ScrollBox>
          )}
        </>
      )}
    </>
  );
}

function PlanUsage({ usage }: { usage: Usage }) {
  const percent = Math.min(100, usage.percentUsed);
  const tone = usage.percentUsed >= 100 ? "bg-red-700" : usage.percentUsed >= 80 ? "bg-amber-600" : "bg-blue-700";
  return (
    <section aria-labelledby="plan" className="rounded border border-slate-300 bg-white p-4">
      <h2 id="plan" className="text-lg font-semibold">
        Plan: <span className="capitalize">{usage.tier}</span>
      </h2>
      <p className="text-sm">
        {number.format(usage.emailsPerMonth)} e-mails a month;{" "}
        {usage.overageAllowed ? "more is billed as overage." : "sending stops at the allowance."}
      </p>
      <p className="mt-3 text-sm" id="usage-label">
        Sent since {new Date(usage.periodStart).toLocaleDateString()}: {number.format(usage.emailsSent)} of{" "}
        {number.format(usage.emailsPerMonth)} ({usage.percentUsed}%)
      </p>
      <div
        role="progressbar"
        aria-labelledby="usage-label"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent}
        className="mt-1 h-3 w-full overflow-hidden rounded bg-slate-200"
      >
        <div className={`h-full ${tone}`} style={{ width: `${percent}%` }} />
      </div>
    </section>
  );
}

function Stripe({ base, plans }: { base: string; plans: Plan[] }) {
  const [link, setLink] = useState<{ label: string; url: string } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function open(label: string, path: string, body?: unknown) {
    setBusy(true);
    setError(null);
    setLink(null);
    try {
      const made = await api<{ url: string }>("POST", path, body);
      setLink({ label, url: made.url });
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section aria-labelledby="stripe" className="mt-4 rounded border border-slate-300 bg-white p-4">
      <h2 id="stripe" className="text-lg font-semibold">
        Payment and subscription
      </h2>
      <p className="text-sm">
        Payment methods, billing details, plan changes and cancellation are in Stripe's customer portal.
      </p>
      <div className="mt-2 flex flex-wrap gap-2">
        <button type="button" className={buttonClass} disabled={busy} onClick={() => void open("Stripe customer portal", `${base}/portal`)}>
          Open the customer portal
        </button>
      </div>
      <ErrorNotice error={error} />
      {plans.length > 0 && (
        <div className="mt-3">
          <h3 className="font-medium">Plans on sale</h3>
          <p className="text-sm text-slate-700">
            No subscription yet: subscribe through Stripe Checkout. Subscribed: change plan in the portal.
          </p>
          <ul className="mt-1 flex flex-wrap gap-2">
            {plans.map((p) => (
              <li key={p.tier}>
                <button
                  type="button"
                  className={secondaryButtonClass}
                  disabled={busy}
                  onClick={() => void open(`Stripe Checkout for ${p.tier}`, `${base}/checkout`, { plan: p.tier })}
                >
                  Subscribe to {p.tier} ({number.format(p.emailsPerMonth)} e-mails a month)
                </button>
              </li>
            ))}
          </ul>
        </div>
      )}
      {link && (
        <p role="status" className="mt-3 text-sm">
          <a data-testid="stripe-link" className="font-medium text-blue-800 underline" href={link.url} rel="noreferrer">
            Continue to the {link.label}
          </a>{" "}
          (the link works for a few minutes).
        </p>
      )}
    </section>
  );
}
