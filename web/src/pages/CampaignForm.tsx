// What the create flow (CampaignNew.tsx) and the edit page (CampaignEdit.tsx) share: the values
// of a campaign's editable parts (message, schedule, throttles, warm-up, stop rules, mailboxes),
// how they become a spec and come back from one, the API params each field shows, and the
// sections that edit them.
import { useMemo, useState, type ReactNode } from "react";
import { api, tenantPath, type Contact, type Schemas, type SendingDomain } from "../api/client";
import { Badge, ErrorNotice, Field, inputClass, secondaryButtonClass, useLoad } from "../components/ui";
import { errorOf } from "../components/useForm";

type Spec = Schemas["CampaignSpec"];
type Preview = Schemas["CampaignPreview"];
type Weekday = Schemas["Weekday"];

const DAYS: { day: Weekday; label: string }[] = [
  { day: "mon", label: "Mon" },
  { day: "tue", label: "Tue" },
  { day: "wed", label: "Wed" },
  { day: "thu", label: "Thu" },
  { day: "fri", label: "Fri" },
  { day: "sat", label: "Sat" },
  { day: "sun", label: "Sun" },
];
// Always there, whatever the contact: the sender adds them (sender/render.py).
const BUILT_IN_FIELDS = ["email", "unsubscribe_url", "postal_address"];

/** The editable parts of a campaign, as the form's inputs hold them (numbers as typed). */
export interface CampaignValues {
  subject: string;
  text: string;
  html: string;
  startAt: string;
  windowOn: boolean;
  days: Weekday[];
  startHour: string;
  endHour: string;
  timezone: string;
  perHour: string;
  perDay: string;
  perMailbox: string;
  warmupOn: boolean;
  warmupStart: string;
  warmupIncrease: string;
  warmupTarget: string;
  /** Stop rules: the rates in percent (5 = 0.05). */
  maxBounce: string;
  maxComplaint: string;
  stopWindow: string;
  minSample: string;
  /** Send from several mailboxes (spec.rotation) rather than one From address. */
  rotationOn: boolean;
  /** The mailboxes ticked, each `domainRef/localPart`. */
  mailboxes: string[];
  sticky: boolean;
}

export const NEW_CAMPAIGN: CampaignValues = {
  subject: "",
  text: "",
  html: "",
  startAt: "",
  windowOn: false,
  days: ["mon", "tue", "wed", "thu", "fri"],
  startHour: "8",
  endHour: "18",
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  perHour: "",
  perDay: "",
  perMailbox: "50",
  warmupOn: false,
  warmupStart: "50",
  warmupIncrease: "20",
  warmupTarget: "",
  // The model's defaults (api/v1alpha1/campaign.py StopRules).
  maxBounce: "5",
  maxComplaint: "0.1",
  stopWindow: "24h",
  minSample: "100",
  rotationOn: false,
  mailboxes: [],
  sticky: true,
};

/** The API params each field shows its error under (the create's and the edit's alike); a rule
 * of a whole section (`=spec.throttle`: perHour above perDay) goes to one field of it, exactly,
 * so that a field's own error is not shown under its neighbours too. */
export const FIELD_PARAMS = {
  subject: ["spec.subject"],
  text: ["spec.text", "=spec"], // `spec` alone: "set spec.text, spec.html or both"
  html: ["spec.html"],
  startAt: ["spec.schedule.startAt"],
  window: ["spec.schedule.window", "=spec.schedule"],
  perHour: ["spec.throttle.perHour"],
  perDay: ["spec.throttle.perDay"],
  perMailbox: ["spec.throttle.perMailboxPerDay", "=spec.throttle"],
  warmup: ["spec.warmup"],
  maxBounce: ["spec.stopRules.maxBounceRate"],
  maxComplaint: ["spec.stopRules.maxComplaintRate"],
  stopWindow: ["spec.stopRules.window"],
  minSample: ["spec.stopRules.minSample", "=spec.stopRules"],
  mailboxes: ["spec.rotation"],
};
export type CampaignErrors = Record<keyof typeof FIELD_PARAMS, string | undefined>;

function numberOrNull(value: string): number | null {
  return value.trim() === "" ? null : Number(value);
}

/** A rate typed in percent as the API's fraction (0.1 % is 0.001). */
function fraction(percent: string): number {
  return Number((Number(percent) / 100).toPrecision(12));
}

function percentOf(rate: number): string {
  return String(Number((rate * 100).toPrecision(12)));
}

/** An RFC 3339 time as a datetime-local input holds it (the browser's local time). */
function localInput(time: string): string {
  const at = new Date(time);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}

/** spec.rotation from the ticked mailboxes: one selection per domain, in the order ticked. */
export function rotationOf(values: CampaignValues): Spec["rotation"] {
  if (!values.rotationOn || values.mailboxes.length === 0) return null;
  const byDomain = new Map<string, string[]>();
  for (const key of values.mailboxes) {
    const [domain, localPart] = key.split("/");
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), localPart]);
  }
  return {
    mailboxes: [...byDomain].map(([name, localParts]) => ({ sendingDomainRef: { name }, localParts })),
    sticky: values.sticky,
  };
}

/** The spec's editable parts from the values: every one written in full (unset ones as null),
 * so that as a merge patch (the edit) it also unsets what the form cleared. */
export function specParts(values: CampaignValues) {
  return {
    subject: values.subject,
    text: values.text || null,
    html: values.html || null,
    schedule: {
      startAt: values.startAt ? new Date(values.startAt).toISOString() : null,
      window: values.windowOn
        ? {
            days: values.days,
            startHour: Number(values.startHour),
            endHour: Number(values.endHour),
            timezone: values.timezone.trim(),
          }
        : null,
    },
    throttle: {
      perHour: numberOrNull(values.perHour),
      perDay: numberOrNull(values.perDay),
      perMailboxPerDay: Number(values.perMailbox),
    },
    warmup: values.warmupOn
      ? {
          enabled: true,
          initialPerDay: Number(values.warmupStart),
          dailyIncreasePercent: Number(values.warmupIncrease),
          targetPerDay: numberOrNull(values.warmupTarget),
        }
      : null,
    stopRules: {
      maxBounceRate: fraction(values.maxBounce),
      maxComplaintRate: fraction(values.maxComplaint),
      window: values.stopWindow.trim(),
      minSample: Number(values.minSample),
    },
    rotation: rotationOf(values),
  };
}

/** The values of a campaign the API holds (the edit page's starting point). */
export function valuesOf(spec: Spec): CampaignValues {
  const window = spec.schedule?.window;
  const stop = spec.stopRules;
  const warmup = spec.warmup;
  return {
    ...NEW_CAMPAIGN,
    subject: spec.subject,
    text: spec.text ?? "",
    html: spec.html ?? "",
    startAt: spec.schedule?.startAt ? localInput(spec.schedule.startAt) : "",
    windowOn: Boolean(window),
    days: window?.days ?? NEW_CAMPAIGN.days,
    startHour: String(window?.startHour ?? 8),
    endHour: String(window?.endHour ?? 18),
    timezone: window?.timezone ?? NEW_CAMPAIGN.timezone,
    perHour: spec.throttle?.perHour?.toString() ?? "",
    perDay: spec.throttle?.perDay?.toString() ?? "",
    perMailbox: String(spec.throttle?.perMailboxPerDay ?? 50),
    warmupOn: Boolean(warmup?.enabled),
    warmupStart: String(warmup?.initialPerDay ?? 50),
    warmupIncrease: String(warmup?.dailyIncreasePercent ?? 20),
    warmupTarget: warmup?.targetPerDay?.toString() ?? "",
    maxBounce: percentOf(stop?.maxBounceRate ?? 0.05),
    maxComplaint: percentOf(stop?.maxComplaintRate ?? 0.001),
    stopWindow: stop?.window ?? "24h",
    minSample: String(stop?.minSample ?? 100),
    rotationOn: Boolean(spec.rotation),
    mailboxes: (spec.rotation?.mailboxes ?? []).flatMap((m) =>
      (m.localParts ?? []).map((l) => `${m.sendingDomainRef.name}/${l}`),
    ),
    sticky: spec.rotation?.sticky ?? true,
  };
}

/** Verified: the operator saw every record it lists (as on the domains page). */
export function verified(domain: SendingDomain): boolean {
  const records = domain.status?.records ?? [];
  return records.length > 0 && records.every((r) => r.verified);
}

export function Section({ title, children }: { title: string; children: ReactNode }) {
  return (
    <fieldset className="grid gap-4 rounded border border-slate-300 bg-white p-4">
      <legend className="px-1 text-lg font-semibold">{title}</legend>
      {children}
    </fieldset>
  );
}

/** What the sections need of a form (useForm's) whose values include CampaignValues. */
export interface CampaignForm {
  values: CampaignValues;
  set: (patch: Partial<CampaignValues>) => void;
}
type Props = { form: CampaignForm; errors: CampaignErrors };

/** A text input bound to one of the values. */
function bind(form: CampaignForm, key: { [K in keyof CampaignValues]: CampaignValues[K] extends string ? K : never }[keyof CampaignValues]) {
  return { value: form.values[key], onChange: (e: { target: { value: string } }) => form.set({ [key]: e.target.value }) };
}

/** The mailboxes of every sending domain (their spec.mailboxes), with the domain's verification
 * and each mailbox's limit today and warm-up day (the domain's status.mailboxes). */
export function MailboxPicker({ form, errors, domains }: Props & { domains: SendingDomain[] }) {
  const { values } = form;
  const withMailboxes = domains.filter((d) => (d.spec.mailboxes ?? []).length > 0);
  const toggle = (key: string, on: boolean) =>
    form.set({ mailboxes: on ? [...values.mailboxes, key] : values.mailboxes.filter((k) => k !== key) });
  return (
    <div
      className="grid gap-3"
      role="group"
      aria-labelledby="campaign-mailboxes-title"
      aria-describedby={errors.mailboxes ? "campaign-mailboxes-hint campaign-mailboxes-error" : "campaign-mailboxes-hint"}
    >
      <p id="campaign-mailboxes-title" className="text-sm font-medium">
        Mailboxes to send from
      </p>
      <p id="campaign-mailboxes-hint" className="text-xs text-slate-600">
        Messages rotate across the ticked mailboxes, each within its own daily limit and warm-up, through its domain's servers.
      </p>
      {withMailboxes.length === 0 && (
        <p className="text-sm">
          No sending domain has mailboxes yet: add them to a domain's <code>spec.mailboxes</code> (API or kubectl).
        </p>
      )}
      {withMailboxes.map((d) => {
        const ok = verified(d);
        const records = d.status?.records ?? [];
        return (
          <fieldset key={d.name} className="rounded border border-slate-200 p-3">
            <legend className="flex flex-wrap items-center gap-2 px-1 text-sm font-medium">
              <span className="break-all">{d.spec.domain}</span>
              <Badge tone={ok ? "ok" : "warn"}>
                {ok ? "Verified" : `Not verified (${records.filter((r) => r.verified).length} of ${records.length} records)`}
              </Badge>
            </legend>
            <ul className="grid gap-1">
              {(d.spec.mailboxes ?? []).map((m) => {
                const key = `${d.name}/${m.localPart}`;
                const today = d.status?.mailboxes?.find((s) => s.localPart === m.localPart);
                return (
                  <li key={key}>
                    <label className="flex flex-wrap items-center gap-x-2 text-sm">
                      <input type="checkbox" checked={values.mailboxes.includes(key)} onChange={(e) => toggle(key, e.target.checked)} />
                      <span className="break-all">
                        {m.localPart}@{d.spec.domain}
                        {m.displayName ? ` (${m.displayName})` : ""}
                      </span>
                      <span className="text-xs text-slate-700">
                        {m.paused
                          ? "paused"
                          : today
                            ? `${today.dailyLimit} a day today of ${m.dailyLimit}${today.warmupDay != null ? `, warm-up day ${today.warmupDay}` : ""}`
                            : `up to ${m.dailyLimit} a day`}
                      </span>
                    </label>
                  </li>
                );
              })}
            </ul>
          </fieldset>
        );
      })}
      <label className="flex items-center gap-2 text-sm">
        <input type="checkbox" checked={values.sticky} onChange={(e) => form.set({ sticky: e.target.checked })} />
        Keep each contact on the mailbox of its first message (follow-ups and replies from the same address)
      </label>
      {errors.mailboxes && (
        <p id="campaign-mailboxes-error" className="text-sm text-red-700" role="alert">
          {errors.mailboxes}
        </p>
      )}
    </div>
  );
}

export function ScheduleSection({ form, errors }: Props) {
  const { values } = form;
  return (
    <Section title="Schedule">
      <Field id="campaign-start-at" label="Do not send before (optional)" hint="Your browser's local time; empty: as soon as it is ready." error={errors.startAt}>
        {(aria) => <input {...aria} type="datetime-local" className={inputClass} {...bind(form, "startAt")} />}
      </Field>
      <label className="flex items-center gap-2 text-sm font-medium">
        <input type="checkbox" checked={values.windowOn} onChange={(e) => form.set({ windowOn: e.target.checked })} />
        Send only within a window (days and hours)
      </label>
      {values.windowOn && (
        <div className="grid gap-3">
          <fieldset>
            <legend className="text-sm font-medium">Days</legend>
            <ul className="mt-1 flex flex-wrap gap-3">
              {DAYS.map(({ day, label }) => (
                <li key={day}>
                  <label className="flex items-center gap-1 text-sm">
                    <input
                      type="checkbox"
                      checked={values.days.includes(day)}
                      onChange={(e) => form.set({ days: e.target.checked ? [...values.days, day] : values.days.filter((d) => d !== day) })}
                    />
                    {label}
                  </label>
                </li>
              ))}
            </ul>
          </fieldset>
          <div className="grid grid-cols-1 gap-3 sm:grid-cols-3">
            <Field id="campaign-start-hour" label="From hour (0-23)">
              {(aria) => <input {...aria} type="number" min={0} max={23} className={inputClass} {...bind(form, "startHour")} />}
            </Field>
            <Field id="campaign-end-hour" label="Until hour (1-24)">
              {(aria) => <input {...aria} type="number" min={1} max={24} className={inputClass} {...bind(form, "endHour")} />}
            </Field>
            <Field id="campaign-timezone" label="Time zone" hint="e.g. America/New_York">
              {(aria) => <input {...aria} className={inputClass} {...bind(form, "timezone")} />}
            </Field>
          </div>
          {errors.window && <p className="text-sm text-red-700" role="alert">{errors.window}</p>}
        </div>
      )}
    </Section>
  );
}

export function ThrottleSection({ form, errors }: Props) {
  const { values } = form;
  return (
    <Section title="Throttles">
      <div className="grid grid-cols-1 gap-3 sm:grid-cols-3">
        <Field id="campaign-per-hour" label="Per hour (optional)" error={errors.perHour}>
          {(aria) => <input {...aria} type="number" min={1} className={inputClass} {...bind(form, "perHour")} />}
        </Field>
        <Field id="campaign-per-day" label="Per day (optional)" error={errors.perDay}>
          {(aria) => <input {...aria} type="number" min={1} className={inputClass} {...bind(form, "perDay")} />}
        </Field>
        <Field id="campaign-per-mailbox" label="Per mailbox per day" error={errors.perMailbox}>
          {(aria) => <input {...aria} type="number" min={1} className={inputClass} {...bind(form, "perMailbox")} />}
        </Field>
      </div>
      <label className="flex items-center gap-2 text-sm font-medium">
        <input type="checkbox" checked={values.warmupOn} onChange={(e) => form.set({ warmupOn: e.target.checked })} />
        Warm up: ramp this campaign's daily volume
      </label>
      {values.warmupOn && (
        <div className="grid grid-cols-1 gap-3 sm:grid-cols-3">
          <Field id="campaign-warmup-start" label="First day's messages" error={errors.warmup}>
            {(aria) => <input {...aria} type="number" min={1} className={inputClass} {...bind(form, "warmupStart")} />}
          </Field>
          <Field id="campaign-warmup-increase" label="Daily increase (%)">
            {(aria) => <input {...aria} type="number" min={1} max={100} className={inputClass} {...bind(form, "warmupIncrease")} />}
          </Field>
          <Field id="campaign-warmup-target" label="Until per day (optional)">
            {(aria) => <input {...aria} type="number" min={1} className={inputClass} {...bind(form, "warmupTarget")} />}
          </Field>
        </div>
      )}
    </Section>
  );
}

export function StopRulesSection({ form, errors }: Props) {
  return (
    <Section title="Stop rules">
      <p className="text-sm text-slate-700">
        Sending stops when recipients react badly: the rates are counted over the window, once enough messages went out.
      </p>
      <div className="grid grid-cols-1 gap-3 sm:grid-cols-2 lg:grid-cols-4">
        <Field id="campaign-max-bounce" label="Stop above bounce rate (%)" error={errors.maxBounce}>
          {(aria) => <input {...aria} type="number" min={0} max={100} step="any" className={inputClass} {...bind(form, "maxBounce")} />}
        </Field>
        <Field id="campaign-max-complaint" label="Stop above complaint rate (%)" error={errors.maxComplaint}>
          {(aria) => <input {...aria} type="number" min={0} max={100} step="any" className={inputClass} {...bind(form, "maxComplaint")} />}
        </Field>
        <Field id="campaign-stop-window" label="Over the last" hint="A duration, e.g. 24h or 90m." error={errors.stopWindow}>
          {(aria) => <input {...aria} className={inputClass} {...bind(form, "stopWindow")} />}
        </Field>
        <Field id="campaign-min-sample" label="Once sent at least" error={errors.minSample}>
          {(aria) => <input {...aria} type="number" min={1} className={inputClass} {...bind(form, "minSample")} />}
        </Field>
      </div>
    </Section>
  );
}

/** The message: subject and templates with the merge fields, and a preview rendered by the API
 * (the sender's own renderer) for a contact of the audience. */
export function Editor({ form, errors, tenant, list }: Props & { tenant: string; list: string }) {
  const { values } = form;
  // A few contacts of the audience: the preview's sample, and the merge fields they have.
  const contacts = useLoad(
    () =>
      list
        ? api<{ data: Contact[] }>("GET", `${tenantPath(tenant, "contacts")}?limit=20&list=${encodeURIComponent(list)}`).then((p) => p.data)
        : Promise.resolve([] as Contact[]),
    [tenant, list],
  );
  const [sampleId, setSampleId] = useState("");
  const [preview, setPreview] = useState<Preview | null>(null);
  const [previewError, setPreviewError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const sample = contacts.data?.find((c) => c.id === sampleId) ?? contacts.data?.[0] ?? null;
  const fields = useMemo(() => {
    const names = new Set<string>();
    for (const c of contacts.data ?? []) for (const key of Object.keys(c.fields)) names.add(key);
    return [...names].sort();
  }, [contacts.data]);

  async function showPreview() {
    setBusy(true);
    setPreviewError(null);
    try {
      setPreview(
        await api<Preview>("POST", tenantPath(tenant, "campaigns/preview"), {
          subject: values.subject,
          text: values.text || null,
          html: values.html || null,
          contactId: sample?.id ?? null,
        }),
      );
    } catch (caught) {
      setPreview(null);
      setPreviewError(caught);
    } finally {
      setBusy(false);
    }
  }

  // The preview's errors name the request's fields (subject, text, html); the form's `spec.*`.
  const subjectError = errorOf(previewError, "subject") ?? errors.subject;
  const textError = errorOf(previewError, "text") ?? errors.text;
  const htmlError = errorOf(previewError, "html") ?? errors.html;
  const previewClaimed = Boolean(errorOf(previewError, "subject", "text", "html"));

  return (
    <Section title="Message">
      <div aria-labelledby="merge-fields-title">
        <p id="merge-fields-title" className="text-sm font-medium">
          Merge fields
        </p>
        <p className="text-xs text-slate-600">
          Write <code>{"{{ first_name }}"}</code> to insert a contact's field; a contact without it is skipped with the
          field named, so use <code>{'{{ first_name | default("there") }}'}</code> for optional ones.
        </p>
        <ul className="mt-1 flex flex-wrap gap-2" aria-label="Merge fields">
          {[...fields, ...BUILT_IN_FIELDS].map((f) => (
            <li key={f}>
              <code className="rounded bg-slate-100 px-2 py-0.5 text-sm">{`{{ ${f} }}`}</code>
            </li>
          ))}
        </ul>
      </div>
      <Field id="campaign-subject" label="Subject" error={subjectError}>
        {(aria) => <input {...aria} className={inputClass} {...bind(form, "subject")} />}
      </Field>
      <Field id="campaign-text" label="Text body" hint="Plain text; the postal address and unsubscribe link are added under it." error={textError}>
        {(aria) => <textarea {...aria} rows={8} className={`${inputClass} font-mono text-sm`} {...bind(form, "text")} />}
      </Field>
      <Field id="campaign-html" label="HTML body (optional)" hint="Contact fields are escaped; a text part is made from it when the text body is empty." error={htmlError}>
        {(aria) => <textarea {...aria} rows={6} className={`${inputClass} font-mono text-sm`} {...bind(form, "html")} />}
      </Field>
      <div className="flex flex-wrap items-end gap-3">
        <Field id="campaign-sample" label="Preview for">
          {(aria) => (
            <select {...aria} className={`${inputClass} max-w-full`} value={sample?.id ?? ""} onChange={(e) => setSampleId(e.target.value)}>
              {(contacts.data ?? []).length === 0 && <option value="">A sample contact (no fields)</option>}
              {(contacts.data ?? []).map((c) => (
                <option key={c.id} value={c.id}>
                  {c.email}
                </option>
              ))}
            </select>
          )}
        </Field>
        <button type="button" className={secondaryButtonClass} disabled={busy} onClick={() => void showPreview()}>
          Preview
        </button>
      </div>
      <ErrorNotice error={previewClaimed ? null : previewError} />
      {preview && (
        <section aria-labelledby="preview-title" className="grid gap-2 rounded border border-slate-300 bg-slate-50 p-3">
          <h2 id="preview-title" className="font-semibold">
            Preview for {preview.contact.email}
          </h2>
          <p className="break-words text-sm">
            <span className="font-medium">Subject:</span> <span data-testid="preview-subject">{preview.subject}</span>
          </p>
          {preview.text !== null && (
            <pre data-testid="preview-text" className="max-h-80 overflow-auto whitespace-pre-wrap break-words rounded bg-white p-2 text-sm" tabIndex={0} aria-label="Text part">
              {preview.text}
            </pre>
          )}
          {preview.html !== null && (
            // No scripts, no same origin: the HTML is the customer's.
            <iframe title="HTML part" sandbox="" srcDoc={preview.html} className="h-64 w-full rounded border border-slate-300 bg-white" />
          )}
        </section>
      )}
    </Section>
  );
}
