// TokenView: the sequence [x, y] token by token. Click a token to make it a target or not.
function render({ model, el }) {
  const root = svEl("div", "sftviz sftviz-tokenview");
  const title = svEl("div", "sftviz-title");
  const summary = svEl("div", "sftviz-summary");
  const controls = svEl("div", "sftviz-controls");
  const shiftLabel = svEl("label");
  const shiftBox = document.createElement("input");
  shiftBox.type = "checkbox";
  shiftBox.className = "sftviz-shift-toggle";
  shiftLabel.appendChild(shiftBox);
  shiftLabel.appendChild(document.createTextNode("shifted view: inputs row over targets row"));
  const hint = svEl("span", "sftviz-caption", "click (or Enter on) a token to train or mask it");
  controls.append(shiftLabel, hint);
  const error = svEl("div", "sftviz-error sftviz-hidden");
  error.setAttribute("role", "alert");
  const body = svEl("div", "sftviz-body");
  const notes = svEl("div");
  const legend = svEl("div");
  // Screen readers hear what a toggle changed (the view itself is redrawn from Python).
  const live = svEl("div", "sftviz-sr-only");
  live.setAttribute("aria-live", "polite");
  root.append(title, summary, controls, error, body, notes, legend, live);
  el.appendChild(root);
  const tip = svTooltip(root);

  // An X-ray row (TokenView(report.rows[i])): a token that disagrees with the policy gets a badge.
  const XRAY = { extra: ["+", "trained, the policy says no"], missing: ["\u2212", "not trained, the policy asks for it"] };
  function xrayWrap(c, rec) {
    if (!rec.xray || !XRAY[rec.xray]) return c;
    const w = svEl("span", "sftviz-xr");
    w.dataset.sftvizXray = rec.xray;
    const badge = svEl("span", "sftviz-xr-badge", XRAY[rec.xray][0]);
    badge.setAttribute("aria-label", XRAY[rec.xray][1]);
    w.append(c, badge);
    return w;
  }

  function chip(rec, role) {
    const c = svChip(rec, { role });
    c._svTip = role === "input" ? ["read as input at position " + rec.position].concat(rec.tip) : rec.tip;
    if (model.get("editable") && role !== "input") {
      c.tabIndex = 0;
      c.setAttribute("role", "button");
      c.setAttribute("aria-pressed", rec.trained ? "true" : "false");
      c.setAttribute("aria-label", "token " + rec.position + " " + JSON.stringify(rec.text) + ", " +
        svSegmentWords(rec.segment) + ", " + (rec.trained ? "trained" : "masked") + ". " + (rec.tip || []).join(". "));
    }
    return role === "input" ? c : xrayWrap(c, rec);
  }

  function draw() {
    const recs = model.get("tokens") || [];
    const shifted = model.get("shifted");
    title.textContent = model.get("title") || "";
    title.classList.toggle("sftviz-hidden", !model.get("title"));
    summary.textContent = model.get("summary") || "";
    shiftBox.checked = shifted;
    hint.classList.toggle("sftviz-hidden", !model.get("editable"));
    root.classList.toggle("sftviz-editable", !!model.get("editable"));
    root.classList.toggle("sftviz-xrayview", recs.some((r) => r.xray !== undefined));
    // Keep the keyboard focus on the same token across the redraw (a toggle redraws the whole strip).
    const focused = body.contains(document.activeElement) ? document.activeElement : null;
    const keep = focused && focused.dataset ? [focused.dataset.sftvizPosition, focused.dataset.sftvizRole] : null;
    body.replaceChildren();
    if (shifted) {
      body.appendChild(svEl("div", "sftviz-caption",
        "Each column is one prediction: the model reads the top token (and everything before it) " +
        "and is scored on the bottom one. Only targets marked trained count in the loss."));
      const strip = svEl("div", "sftviz-strip sftviz-shift");
      const key = svEl("span", "sftviz-rowkey");
      key.append(svEl("span", null, "input t\u22121"), svEl("span", null, "target t"));
      strip.appendChild(key);
      for (let t = 1; t < recs.length; t++) {
        const col = svEl("span", "sftviz-col");
        col.dataset.sftvizPosition = String(t);
        col.append(chip(recs[t - 1], "input"), svEl("span", "sftviz-arrow", "\u2193"), chip(recs[t], "target"));
        strip.appendChild(col);
      }
      body.appendChild(strip);
    } else {
      const strip = svEl("div", "sftviz-strip");
      let prev = null;
      for (const rec of recs) {
        if (rec.segment !== prev && svIsLabelled(rec.segment)) strip.appendChild(svSegLabel(rec.segment));
        prev = rec.segment;
        strip.appendChild(chip(rec, "token"));
        if (rec.newline) strip.appendChild(svEl("span", "sftviz-break"));
      }
      body.appendChild(strip);
    }
    notes.replaceChildren(...(model.get("notes") || []).map((n) => svEl("div", "sftviz-note", n)));
    legend.replaceChildren(svLegend(recs.map((r) => r.segment)));
    if (keep) {
      const again = body.querySelector('.sftviz-tok[data-sftviz-position="' + keep[0] + '"][data-sftviz-role="' + keep[1] + '"]');
      if (again) again.focus({ preventScroll: true });
    }
    if (pending !== null) {
      const rec = recs[pending];
      const n = recs.filter((r) => r.trained).length;
      if (rec) live.textContent = "token " + pending + " " + JSON.stringify(rec.text) + " now " +
        (rec.trained ? "trained" : "masked") + "; " + n + " trained targets";
      pending = null;
    }
  }
  let pending = null;  // the position just toggled, announced once the redraw shows its new state

  function toggleFrom(target) {
    if (!model.get("editable")) return;
    const c = target.closest ? target.closest(".sftviz-tok") : null;
    if (!c || !body.contains(c) || c.dataset.sftvizRole === "input") return;
    const pos = parseInt(c.dataset.sftvizPosition, 10);
    const trained = (model.get("trained") || []).slice();
    if (!(pos >= 0 && pos < trained.length)) return;
    trained[pos] = !trained[pos];
    pending = pos;
    model.set("trained", trained);
    model.save_changes();
  }
  const onClick = (e) => toggleFrom(e.target);
  const onKey = (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggleFrom(e.target); }
  };
  // Hovering a token outlines the token whose logits predict it (position t - 1).
  let related = null;
  const onOver = (e) => {
    const c = e.target.closest ? e.target.closest(".sftviz-tok") : null;
    if (related) { related.classList.remove("sftviz-related"); related = null; }
    if (!c || !body.contains(c) || model.get("shifted")) return;
    const pos = parseInt(c.dataset.sftvizPosition, 10);
    related = body.querySelector('.sftviz-tok[data-sftviz-position="' + (pos - 1) + '"]');
    if (related) related.classList.add("sftviz-related");
  };
  const onShift = () => { model.set("shifted", shiftBox.checked); model.save_changes(); };
  body.addEventListener("click", onClick);
  body.addEventListener("keydown", onKey);
  body.addEventListener("mouseover", onOver);
  shiftBox.addEventListener("change", onShift);
  const unbindError = svBindError(model, error);
  const unlisten = svOn(model, ["tokens", "shifted", "editable", "title", "summary", "notes"], draw);
  draw();
  return () => {
    unlisten();
    unbindError();
    body.removeEventListener("click", onClick);
    body.removeEventListener("keydown", onKey);
    body.removeEventListener("mouseover", onOver);
    shiftBox.removeEventListener("change", onShift);
    tip.hide();
  };
}

export default { render };
