// Users: who may sign in, with which role and which cameras; add, change, remove.
import { api } from "../api.js";
import { h } from "../dom.js";
import { t, tEnum } from "../i18n.js";
import { session } from "../session.js";
import { formatWhen } from "../time.js";
import { errorMessage, field, notice, toast } from "../ui.js";

const ROLES = ["viewer", "operator", "admin"];
const NAME_PATTERN = "[a-z0-9][a-z0-9._\\-]{0,31}";

export function render(body) {
  const status = h("div");
  const list = h("ul", { class: "card-list" });
  const addSlot = h("div");
  body.append(addSlot, status, list);
  let cameras = [];
  let destroyed = false;

  async function load() {
    try {
      const [{ users }, cameraList] = await Promise.all([api("/api/users"), api("/api/cameras")]);
      if (destroyed) return;
      cameras = cameraList.cameras;
      status.replaceChildren();
      list.replaceChildren(...users.map(card));
      if (!addSlot.firstChild) addSlot.append(addForm());
    } catch (error) {
      if (!destroyed) status.replaceChildren(notice("error", t("users.load_failed"), " ", errorMessage(error)));
    }
  }

  const cameraName = (id) => cameras.find((c) => c.id === id)?.name || id;

  function card(user) {
    const locked = user.locked_until_ms && user.locked_until_ms > Date.now();
    const actions = h("div", { class: "actions" });
    const item = h("li", { class: "card" },
      h("h2", { class: "card-title", text: user.name }),
      h("p", {}, h("span", { class: `role role-${user.role}`, text: tEnum("role", user.role) }),
        " ", h("span", { class: "hint", text: tEnum("role_help", user.role) })),
      h("p", { text: user.cameras === null ? t("users.all_cameras")
        : t("users.some_cameras", { cameras: user.cameras.map(cameraName).join(", ") || t("users.no_cameras") }) }),
      locked ? h("p", { class: "badge badge-bad", text: t("users.locked_until", { time: formatWhen(user.locked_until_ms) }) }) : null,
      h("p", { class: "hint", text: t("users.tokens", { count: user.tokens ?? 0 }) }),
      actions);
    const edit = h("button", { type: "button", text: t("users.change") });
    edit.addEventListener("click", () => {
      edit.disabled = true;
      item.append(editForm(user, () => { edit.disabled = false; }));
    });
    const remove = h("button", { type: "button", class: "danger", text: t("users.remove") });
    remove.disabled = user.name === session.user?.name;   // removing yourself would end this session mid-task
    remove.addEventListener("click", async () => {
      if (!window.confirm(t("users.remove_confirm", { name: user.name }))) return;
      try {
        await api(`/api/users/${encodeURIComponent(user.name)}`, { method: "DELETE" });
        toast(t("users.removed", { name: user.name }));
        load();
      } catch (error) {
        status.replaceChildren(notice("error", t("users.remove_failed"), " ", errorMessage(error)));
      }
    });
    actions.append(edit, remove);
    return item;
  }

  function addForm() {
    const name = h("input", { type: "text", required: true, pattern: NAME_PATTERN, autocapitalize: "none", spellcheck: "false", autocomplete: "off" });
    const role = roleSelect("viewer");
    const password = h("input", { type: "password", required: true, autocomplete: "new-password" });
    const repeat = h("input", { type: "password", required: true, autocomplete: "new-password" });
    const grants = cameraChooser(cameras, null);
    const message = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "panel", novalidate: true },
      h("div", { class: "field-row" },
        field(t("users.name"), name, t("users.name_hint")),
        field(t("users.role"), role)),
      h("div", { class: "field-row" },
        field(t("users.password"), password),
        field(t("users.password_repeat"), repeat)),
      grants.element,
      message,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: t("users.add") })));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const problem = !new RegExp(`^${NAME_PATTERN}$`).test(name.value) ? t("users.bad_name")
        : !password.value ? t("users.need_password")
          : password.value !== repeat.value ? t("users.passwords_differ") : "";
      if (problem) {
        message.replaceChildren(notice("error", problem));
        return;
      }
      try {
        await api("/api/users", { method: "POST", body: { name: name.value, role: role.value, password: password.value, cameras: grants.value() } });
        toast(t("users.added", { name: name.value }));
        form.reset();
        message.replaceChildren();
        load();
      } catch (error) {
        message.replaceChildren(notice("error", t("users.add_failed"), " ", errorMessage(error)));
      }
    });
    return h("details", { class: "add-details" }, h("summary", { text: t("users.add_title") }), form);
  }

  function editForm(user, onClose) {
    const role = roleSelect(user.role);
    const grants = cameraChooser(cameras, user.cameras);
    const password = h("input", { type: "password", autocomplete: "new-password" });
    const repeat = h("input", { type: "password", autocomplete: "new-password" });
    const message = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "inline-form", novalidate: true },
      field(t("users.role"), role),
      grants.element,
      h("div", { class: "field-row" },
        field(t("users.new_password"), password, t("users.new_password_hint")),
        field(t("users.password_repeat"), repeat)),
      message,
      h("div", { class: "actions" },
        h("button", { type: "submit", class: "primary", text: t("common.save") }),
        h("button", { type: "button", class: "quiet", text: t("common.cancel"), onclick: () => { form.remove(); onClose(); } })));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (password.value !== repeat.value) {
        message.replaceChildren(notice("error", t("users.passwords_differ")));
        return;
      }
      const change = {};
      if (role.value !== user.role) change.role = role.value;
      const chosen = grants.value();
      if (JSON.stringify(chosen) !== JSON.stringify(user.cameras)) change.cameras = chosen;
      if (password.value) change.password = password.value;
      if (!Object.keys(change).length) {
        form.remove();
        onClose();
        return;
      }
      try {
        await api(`/api/users/${encodeURIComponent(user.name)}`, { method: "PATCH", body: change });
        toast(t("users.changed", { name: user.name }));
        load();
      } catch (error) {
        message.replaceChildren(notice("error", t("users.change_failed"), " ", errorMessage(error)));
      }
    });
    return form;
  }

  load();
  return () => { destroyed = true; };
}

function roleSelect(current) {
  return h("select", {}, ...ROLES.map((role) => h("option", { value: role, selected: role === current, text: tEnum("role", role) })));
}

/** "All cameras" or a chosen few: {element, value() -> null | [ids]}. */
export function cameraChooser(cameras, selected) {
  const group = `cams-${Math.random().toString(36).slice(2, 8)}`;
  const all = h("input", { type: "radio", name: group, value: "all", checked: selected === null });
  const some = h("input", { type: "radio", name: group, value: "some", checked: selected !== null });
  const boxes = cameras.map((camera) => h("input", { type: "checkbox", value: camera.id, checked: selected?.includes(camera.id) }));
  const sync = () => boxes.forEach((box) => { box.disabled = all.checked; });
  all.addEventListener("change", sync);
  some.addEventListener("change", sync);
  sync();
  const element = h("fieldset", { class: "camera-chooser" },
    h("legend", { text: t("users.cameras") }),
    h("label", { class: "check" }, all, t("users.all_cameras")),
    h("label", { class: "check" }, some, t("users.only_these")),
    h("div", { class: "check-grid" }, ...cameras.map((camera, i) => h("label", { class: "check" }, boxes[i], camera.name || camera.id))));
  return {
    element,
    value: () => (all.checked ? null : boxes.filter((box) => box.checked).map((box) => box.value)),
  };
}
