// Building elements without innerHTML: names, reasons and messages come from the box and from cameras,
// so nothing is ever parsed as markup.

/**
 * h("button", {class: "primary", onclick: fn, "aria-label": "..."}, child, "text", [more])
 * Props: class, text, dataset (object), on<event> (listener), value/checked/disabled/hidden/... (set as
 * properties), anything else as an attribute (false/null/undefined leave it out).
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) element[key] = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "required", "readOnly",
  "muted", "autoplay", "playsInline", "loading", "open", "multiple", "type", "min", "max", "step"]);

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

/** Position an element along a bar: CSSOM, which the Content-Security-Policy allows (style= does not). */
export function place(element, leftPercent, widthPercent) {
  element.style.setProperty("left", `${leftPercent}%`);
  if (widthPercent !== undefined) element.style.setProperty("width", `${widthPercent}%`);
}
