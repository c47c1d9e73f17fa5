// The settings section's own navigation: one entry in the main navigation, tabs inside.
export const SETTINGS_TABS = [
  { path: "settings/members", label: "Members" },
  { path: "settings/webhooks", label: "Webhooks" },
  { path: "settings/billing", label: "Billing" },
  { path: "settings/security", label: "Security" },
] as const;

export function SettingsNav({ current }: { current: (typeof SETTINGS_TABS)[number]["path"] }) {
  return (
    <nav aria-label="Settings" className="mb-4 border-b border-slate-300">
      <ul className="flex flex-wrap gap-1">
        {SETTINGS_TABS.map((t) => (
          <li key={t.path}>
            <a
              href={`#/${t.path}`}
              aria-current={t.path === current ? "page" : undefined}
              className="-mb-px block border-b-2 border-transparent px-3 py-2 text-sm font-medium hover:bg-slate-100 aria-[current=page]:border-blue-700 aria-[current=page]:text-blue-900"
            >
              {t.label}
            </a>
          </li>
        ))}
      </ul>
    </nav>
  );
}
