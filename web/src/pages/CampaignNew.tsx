// A new campaign (#/campaigns/new): the template editor with its merge fields and a preview
// rendered by the API for a sample contact (POST .../campaigns/preview: the sender's own
// renderer), the audience, the sender (one From address and servers, or several mailboxes
// across the tenant's sending domains: spec.rotation), schedule, throttles and stop rules. The
// API's errors are shown under the field their `param` names. A chunk of its own, loaded on
// first visit; the sections it shares with the edit page are CampaignForm.tsx's.
import { ApiError, all, api, tenantPath, type ContactList, type Schemas, type SendingDomain, type SmtpServer } from "../api/client";
import { Empty, ErrorNotice, Field, PageTitle, buttonClass, inputClass, useLoad } from "../components/ui";
import { useForm } from "../components/useForm";
import {
  Editor,
  FIELD_PARAMS,
  MailboxPicker,
  NEW_CAMPAIGN,
  ScheduleSection,
  Section,
  StopRulesSection,
  ThrottleSection,
  specParts,
  verified,
  type CampaignValues,
} from "./CampaignForm";

type CampaignCreate = Schemas["CampaignCreate"];
const OTHER = "";

/** What only the create flow asks: the name, the sender, the audience, start at once or not. */
interface NewValues extends CampaignValues {
  name: string;
  domainName: string;
  mailbox: string;
  localPart: string;
  fromName: string;
  replyTo: string;
  serverRefs: string[];
  list: string;
  excluded: string;
  startNow: boolean;
}

export default function CampaignNew({ tenant }: { tenant: string }) {
  const domains = useLoad(() => all<SendingDomain>(tenantPath(tenant, "sending-domains")), [tenant]);
  const servers = useLoad(() => all<SmtpServer>(tenantPath(tenant, "smtp-servers")), [tenant]);
  const lists = useLoad(() => all<ContactList>(tenantPath(tenant, "contact-lists")), [tenant]);
  const form = useForm<NewValues>({
    ...NEW_CAMPAIGN,
    name: "",
    domainName: "",
    mailbox: OTHER,
    localPart: "",
    fromName: "",
    replyTo: "",
    serverRefs: [],
    list: "",
    excluded: "",
    startNow: false,
  });
  const { values, set } = form;

  const every = domains.data ?? [];
  const usable = every.filter(verified);
  // One From address: on the domain chosen. Several mailboxes: the first one ticked is the
  // campaign's domain and its default From (spec.from's domain must be the sending domain).
  const firstTicked = values.rotationOn ? values.mailboxes[0]?.split("/") : undefined;
  const domain =
    (firstTicked ? every.find((d) => d.name === firstTicked[0]) : undefined) ??
    usable.find((d) => d.name === values.domainName) ??
    usable[0] ??
    null;
  const fqdn = domain?.spec.domain ?? "";
  const mailboxes = domain?.spec.mailboxes ?? [];
  const domainServers = (domain?.spec.smtpServerRefs ?? []).map((r) => r.name);
  const chosenList = values.list || lists.data?.[0]?.name || "";
  const chosenMailbox = mailboxes.find((m) => m.localPart === (firstTicked ? firstTicked[1] : values.mailbox));
  const fromAddress = `${chosenMailbox ? chosenMailbox.localPart : values.localPart.trim()}@${fqdn}`;

  const send = form.submit(async (v) => {
    if (!domain) return;
    if (v.rotationOn && v.mailboxes.length === 0) {
      // Said here, under the mailboxes: without one the API would only see an empty From.
      throw new ApiError(400, {
        type: "invalid_request_error",
        code: "parameter_missing",
        message: "Tick at least one mailbox to send from, or choose One address.",
        param: "spec.rotation",
      });
    }
    const body: CampaignCreate = {
      name: v.name.trim(),
      spec: {
        sendingDomainRef: { name: domain.name },
        // Several mailboxes: each goes through its own domain's servers.
        smtpServerRefs: v.rotationOn ? [] : v.serverRefs.map((s) => ({ name: s })),
        from: { address: fromAddress, name: v.fromName.trim() || chosenMailbox?.displayName || null },
        replyTo: v.replyTo.trim() ? { address: v.replyTo.trim() } : null,
        audience: { lists: chosenList ? [chosenList] : [], excludeLists: v.excluded ? [v.excluded] : [] },
        ...specParts(v),
        paused: !v.startNow,
      },
    };
    await api("POST", tenantPath(tenant, "campaigns"), body);
    window.location.hash = "#/campaigns";
  });

  // Each field's error (one per answer); what no field claims goes in the alert at the end.
  const { field: errors, other } = form.errors({
    ...FIELD_PARAMS,
    name: ["name", "metadata"],
    domain: ["spec.sendingDomainRef"],
    from: ["spec.from.address"],
    fromName: ["spec.from.name"],
    replyTo: ["spec.replyTo"],
    servers: ["spec.smtpServerRefs"],
    list: ["spec.audience.lists", "=spec.audience"],
    excluded: ["spec.audience.excludeLists"],
  });

  if (!domains.data) {
    // The sender's choices come from the domains: the form waits for them.
    return (
      <>
        <PageTitle>New campaign</PageTitle>
        <ErrorNotice error={domains.error} />
        {!domains.error && <p>Loading…</p>}
      </>
    );
  }

  if (usable.length === 0) {
    return (
      <>
        <PageTitle>New campaign</PageTitle>
        <Empty title="No verified sending domain yet">
          A campaign sends from a verified domain: add one on the{" "}
          <a className="text-blue-800 underline" href="#/domains">
            sending domains
          </a>{" "}
          page and publish its records; it can be chosen here once they are verified.
        </Empty>
      </>
    );
  }

  return (
    <>
      <PageTitle>New campaign</PageTitle>
      <p className="mb-4 text-sm">
        <a className="text-blue-800 underline" href="#/campaigns">
          Back to campaigns
        </a>
      </p>
      <ErrorNotice error={domains.error ?? servers.error ?? lists.error} />
      <form onSubmit={send} className="grid gap-4" noValidate aria-label="New campaign">
        <Section title="Campaign">
          <Field id="campaign-name" label="Name" hint="Lower case letters, digits and dashes, e.g. spring-launch." error={errors.name}>
            {(aria) => (
              <input {...aria} className={inputClass} value={values.name} onChange={(e) => set({ name: e.target.value })} autoComplete="off" />
            )}
          </Field>
        </Section>

        <Section title="Sender">
          <fieldset>
            <legend className="text-sm font-medium">Send from</legend>
            <div className="mt-1 flex flex-wrap gap-4">
              <label className="flex items-center gap-2 text-sm">
                <input type="radio" name="send-from" checked={!values.rotationOn} onChange={() => set({ rotationOn: false })} />
                One address
              </label>
              <label className="flex items-center gap-2 text-sm">
                <input type="radio" name="send-from" checked={values.rotationOn} onChange={() => set({ rotationOn: true })} />
                Several mailboxes, across domains
              </label>
            </div>
          </fieldset>
          {values.rotationOn ? (
            <MailboxPicker form={form} errors={errors} domains={every} />
          ) : (
            <>
              <Field id="campaign-domain" label="Sending domain" hint="Verified domains only." error={errors.domain}>
                {(aria) => (
                  <select
                    {...aria}
                    className={inputClass}
                    value={domain?.name ?? ""}
                    onChange={(e) => {
                      set({ domainName: e.target.value, mailbox: OTHER, serverRefs: [] });
                    }}
                  >
                    {usable.map((d) => (
                      <option key={d.name} value={d.name}>
                        {d.spec.domain}
                      </option>
                    ))}
                  </select>
                )}
              </Field>
              {mailboxes.length > 0 && (
                <Field id="campaign-mailbox" label="Mailbox" hint="The domain's mailboxes, each with its own daily cap and warm-up.">
                  {(aria) => (
                    <select {...aria} className={inputClass} value={values.mailbox} onChange={(e) => set({ mailbox: e.target.value })}>
                      {mailboxes.map((m) => (
                        <option key={m.localPart} value={m.localPart}>
                          {m.localPart}@{fqdn}
                          {m.displayName ? ` (${m.displayName})` : ""}
                        </option>
                      ))}
                      <option value={OTHER}>Another address on {fqdn}</option>
                    </select>
                  )}
                </Field>
              )}
              {!chosenMailbox && (
                <Field id="campaign-from" label={`From address (before @${fqdn})`} error={errors.from}>
                  {(aria) => (
                    <div className="flex min-w-0 items-center gap-1">
                      <input
                        {...aria}
                        className={`${inputClass} min-w-0 flex-1`}
                        value={values.localPart}
                        onChange={(e) => set({ localPart: e.target.value })}
                        autoComplete="off"
                      />
                      <span className="break-all text-sm text-slate-700" aria-hidden="true">
                        @{fqdn}
                      </span>
                    </div>
                  )}
                </Field>
              )}
            </>
          )}
          {(chosenMailbox || values.rotationOn) && errors.from && (
            <p className="text-sm text-red-700" role="alert">
              {errors.from}
            </p>
          )}
          <Field
            id="campaign-from-name"
            label="From name (optional)"
            hint={values.rotationOn ? "e.g. Jane from Acme; empty: each mailbox's own display name." : "e.g. Jane from Acme."}
            error={errors.fromName}
          >
            {(aria) => <input {...aria} className={inputClass} value={values.fromName} onChange={(e) => set({ fromName: e.target.value })} />}
          </Field>
          <Field id="campaign-reply-to" label="Reply-To address (optional)" error={errors.replyTo}>
            {(aria) => (
              <input {...aria} type="email" className={inputClass} value={values.replyTo} onChange={(e) => set({ replyTo: e.target.value })} />
            )}
          </Field>
          {!values.rotationOn && (
            <fieldset aria-describedby="campaign-servers-hint">
              <legend className="text-sm font-medium">SMTP servers</legend>
              <p id="campaign-servers-hint" className="text-xs text-slate-600">
                None ticked: all of the domain's servers.
              </p>
              {domainServers.length === 0 && <p className="text-sm">The domain names no server.</p>}
              <ul className="mt-1 flex flex-wrap gap-3">
                {domainServers.map((s) => {
                  const server = servers.data?.find((x) => x.name === s);
                  const ready = server?.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
                  return (
                    <li key={s}>
                      <label className="flex items-center gap-2 text-sm">
                        <input
                          type="checkbox"
                          checked={values.serverRefs.includes(s)}
                          onChange={(e) =>
                            set({ serverRefs: e.target.checked ? [...values.serverRefs, s] : values.serverRefs.filter((x) => x !== s) })
                          }
                        />
                        {s} {server ? (ready ? "(healthy)" : "(needs attention)") : ""}
                      </label>
                    </li>
                  );
                })}
              </ul>
              {errors.servers && <p className="text-sm text-red-700" role="alert">{errors.servers}</p>}
            </fieldset>
          )}
        </Section>

        <Section title="Audience">
          {lists.data && lists.data.length === 0 && (
            <p className="text-sm">
              No contact list yet: upload contacts on the{" "}
              <a className="text-blue-800 underline" href="#/contacts">
                contacts
              </a>{" "}
              page first.
            </p>
          )}
          <Field id="campaign-list" label="Contact list" error={errors.list}>
            {(aria) => (
              <select {...aria} className={inputClass} value={chosenList} onChange={(e) => set({ list: e.target.value })}>
                {(lists.data ?? []).map((l) => (
                  <option key={l.id} value={l.name}>
                    {l.name} ({l.contacts} contacts)
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field id="campaign-exclude" label="Skip the members of (optional)" error={errors.excluded}>
            {(aria) => (
              <select {...aria} className={inputClass} value={values.excluded} onChange={(e) => set({ excluded: e.target.value })}>
                <option value="">No list</option>
                {(lists.data ?? [])
                  .filter((l) => l.name !== chosenList)
                  .map((l) => (
                    <option key={l.id} value={l.name}>
                      {l.name}
                    </option>
                  ))}
              </select>
            )}
          </Field>
        </Section>

        <Editor form={form} errors={errors} tenant={tenant} list={chosenList} />
        <ScheduleSection form={form} errors={errors} />
        <ThrottleSection form={form} errors={errors} />
        <StopRulesSection form={form} errors={errors} />

        <div className="grid gap-3 rounded border border-slate-300 bg-white p-4">
          <label className="flex items-center gap-2 text-sm font-medium">
            <input type="checkbox" checked={values.startNow} onChange={(e) => set({ startNow: e.target.checked })} />
            Start sending as soon as it is ready (otherwise it is created paused: start it from the list)
          </label>
          <div>
            <button type="submit" className={buttonClass} disabled={form.busy || !domain}>
              Create campaign
            </button>
          </div>
          <ErrorNotice error={other} />
        </div>
      </form>
    </>
  );
}
