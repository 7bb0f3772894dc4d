// Administration: tabs for what the signed-in admin may do; each tab is its own module.
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { may } from "../session.js";
import * as audit from "./admin_audit.js";
import * as references from "./admin_references.js";
import * as tokens from "./admin_tokens.js";
import * as users from "./admin_users.js";

export const TABS = [
  { id: "users", label: "admin.tab.users", permission: "manage_users", view: users },
  { id: "tokens", label: "admin.tab.tokens", permission: "manage_users", view: tokens },
  { id: "audit", label: "admin.tab.audit", permission: "read_audit", view: audit },
  { id: "references", label: "admin.tab.references", permission: "approve_reference", view: references },
];

export function allowedTabs() {
  return TABS.filter((tab) => may(tab.permission));
}

export function render(main, params) {
  const tabs = allowedTabs();
  const active = tabs.find((tab) => tab.id === params.tab) || tabs[0];
  const nav = h("nav", { class: "tabs", "aria-label": t("admin.sections") },
    ...tabs.map((tab) => h("a", {
      href: `#/admin/${tab.id}`, class: "tab", text: t(tab.label),
      "aria-current": tab === active ? "page" : undefined,
    })));
  const body = h("div", { class: "admin-body" });
  main.append(h("section", { class: "admin" }, h("h1", { text: t("admin.title") }), nav, body));
  if (!active) {
    body.append(h("p", { text: t("admin.nothing") }));
    return undefined;
  }
  return active.view.render(body, params);
}
