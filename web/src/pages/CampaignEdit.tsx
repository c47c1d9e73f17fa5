// Edit a campaign (#/campaigns/<name>/edit): its message, mailboxes, schedule, throttles and stop
// rules, sent as a merge patch of the spec (PATCH .../campaigns/<name>) with If-Match: the ETag of
// the copy the form was filled from. Someone else's change of the spec in between is refused by the
// API (412): the page says so and shows the campaign as it now is. A completed campaign is not edited.
// A chunk of its own, loaded on first visit; the sections are CampaignForm.tsx's, as in the create flow.
import { useEffect, useState } from "react";
import { ApiError, all, api, tenantPath, versioned, type Campaign, type SendingDomain } from "../api/client";
import { ErrorNotice, PageTitle, buttonClass, useLoad } from "../components/ui";
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
  valuesOf,
} from "./CampaignForm";

const STALE =
  "Someone else changed this campaign after you opened it, so your changes were not saved. " +
  "The form now shows the campaign as it is: make your changes again.";

export default function CampaignEdit({ tenant, name }: { tenant: string; name: string }) {
  const path = `${tenantPath(tenant, "campaigns")}/${encodeURIComponent(name)}`;
  const domains = useLoad(() => all<SendingDomain>(tenantPath(tenant, "sending-domains")), [tenant]);
  const [campaign, setCampaign] = useState<{ data: Campaign; etag: string | null } | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const form = useForm(NEW_CAMPAIGN);
  const { reset } = form;

  // The campaign as the API holds it now, with its ETag; the form starts from it.
  async function load(): Promise<void> {
    try {
      const found = await versioned<Campaign>(path);
      setCampaign(found);
      reset(valuesOf(found.data.spec));
      setLoadError(null);
    } catch (caught) {
      setLoadError(caught);
    }
  }
  useEffect(() => {
    void load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [path]);

  const send = form.submit(async (values) => {
    setNotice(null);
    const body = { spec: specParts(values) };
    // The ETag names the spec's version (the operator's status writes do not change it): a 412
    // is someone else's change to the campaign, shown, never overwritten.
    try {
      await api<Campaign>("PATCH", path, body, campaign?.etag ? { "If-Match": campaign.etag } : {});
    } catch (caught) {
      if (!(caught instanceof ApiError && caught.status === 412)) throw caught;
      const now = await versioned<Campaign>(path);
      setCampaign(now);
      reset(valuesOf(now.data.spec));
      setNotice(STALE);
      return;
    }
    window.location.hash = "#/campaigns";
  });
  const { field: errors, other } = form.errors(FIELD_PARAMS);

  const title = `Edit campaign ${name}`;
  if (!campaign) {
    return (
      <>
        <PageTitle>{title}</PageTitle>
        <ErrorNotice error={loadError} />
        {!loadError && <p>Loading…</p>}
      </>
    );
  }
  const spec = campaign.data.spec;
  const completed = campaign.data.status?.phase === "Completed";
  const list = spec.audience.lists[0] ?? "";

  return (
    <>
      <PageTitle>{title}</PageTitle>
      <p className="mb-4 text-sm">
        <a className="text-blue-800 underline" href="#/campaigns">
          Back to campaigns
        </a>
      </p>
      {notice && (
        <p role="alert" className="mb-4 rounded border border-amber-400 bg-amber-50 p-3 text-sm text-amber-900">
          {notice}
        </p>
      )}
      <ErrorNotice error={domains.error} />
      {completed ? (
        <p>This campaign has completed: there is nothing left to send, so it can no longer be changed.</p>
      ) : (
        <form onSubmit={send} className="grid gap-4" noValidate aria-label={title}>
          <Section title="Sender">
            <p className="break-words text-sm">
              From {spec.from.name ? `${spec.from.name} <${spec.from.address}>` : spec.from.address} (sending domain{" "}
              {spec.sendingDomainRef.name}, which a campaign keeps) to {spec.audience.lists.join(", ")}.
            </p>
            <label className="flex items-center gap-2 text-sm font-medium">
              <input type="checkbox" checked={form.values.rotationOn} onChange={(e) => form.set({ rotationOn: e.target.checked })} />
              Rotate across several mailboxes (otherwise every message is from the address above)
            </label>
            {form.values.rotationOn && <MailboxPicker form={form} errors={errors} domains={domains.data ?? []} />}
          </Section>
          <Editor form={form} errors={errors} tenant={tenant} list={list} />
          <ScheduleSection form={form} errors={errors} />
          <ThrottleSection form={form} errors={errors} />
          <StopRulesSection form={form} errors={errors} />
          <div className="grid gap-3 rounded border border-slate-300 bg-white p-4">
            <div>
              <button type="submit" className={buttonClass} disabled={form.busy}>
                Save changes
              </button>
            </div>
            <ErrorNotice error={other} />
          </div>
        </form>
      )}
    </>
  );
}
