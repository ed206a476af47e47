// LogProbExplorer: prompt and completion boxes; per-token log-probs, running sums and
// log Pr([x, y]) = log Pr(x) + log Pr(y | x), rescored (debounced) while typing.
function render({ model, el }) {
  const root = svEl("div", "sftviz sftviz-lpx");
  const title = svEl("div", "sftviz-title");
  const pick = svEl("label", "sftviz-pick");
  pick.appendChild(svEl("span", null, "example: "));
  const select = document.createElement("select");
  select.className = "sftviz-dataset";
  pick.appendChild(select);
  const boxes = svEl("div", "sftviz-boxes");
  const mkBox = (name, words) => {
    const wrap = svEl("label", "sftviz-box");
    const head = svEl("span", "sftviz-seglabel", words);
    head.dataset.sftvizSegment = name;
    const ta = document.createElement("textarea");
    ta.className = "sftviz-text-" + name;
    ta.rows = 4;
    ta.spellcheck = false;
    wrap.append(head, ta);
    boxes.appendChild(wrap);
    return ta;
  };
  const promptBox = mkBox("prompt", svSegmentWords("prompt"));
  const completionBox = mkBox("completion", svSegmentWords("completion"));
  const status = svEl("div", "sftviz-caption sftviz-status");
  const error = svEl("div", "sftviz-error sftviz-hidden");
  error.setAttribute("role", "alert");
  const results = svEl("div", "sftviz-results");
  const ident = svEl("div", "sftviz-identity");
  const strip = svEl("div", "sftviz-strip");
  const notes = svEl("div");
  const tableWrap = svEl("div", "sftviz-tablewrap");
  // the table scrolls inside its box: focusable, so the keyboard can scroll it, and named
  tableWrap.tabIndex = 0;
  tableWrap.setAttribute("role", "region");
  tableWrap.setAttribute("aria-label", "log-probability of each token");
  results.append(ident, strip, notes, tableWrap);
  root.append(title, pick, boxes, status, error, results);
  el.appendChild(root);
  const tip = svTooltip(root);

  let timer = null;
  const push = () => {
    // Both boxes go to the model before the debounce ends: each model.set redraws the text, and while
    // the timer is still set drawText leaves both boxes alone (clearing it first let the prompt's
    // redraw put the old completion back into the completion box).
    const prompt = promptBox.value;
    const completion = completionBox.value;
    model.set("prompt", prompt);
    model.set("completion", completion);
    timer = null;
    model.save_changes();
    status.textContent = "scoring\u2026";
  };
  const onInput = () => {
    if (timer) clearTimeout(timer);
    status.textContent = "typing\u2026";
    if (model.get("choice") !== -1) { model.set("choice", -1); select.value = "-1"; }
    timer = setTimeout(push, model.get("debounce_ms") || 250);
  };
  const onSelect = () => {
    model.set("choice", parseInt(select.value, 10));
    model.save_changes();
    status.textContent = "scoring\u2026";
  };
  promptBox.addEventListener("input", onInput);
  completionBox.addEventListener("input", onInput);
  select.addEventListener("change", onSelect);

  function drawText() {
    // Do not overwrite what the user is typing (a pending debounce holds newer text).
    if (timer) return;
    if (promptBox.value !== model.get("prompt")) promptBox.value = model.get("prompt");
    if (completionBox.value !== model.get("completion")) completionBox.value = model.get("completion");
    const ro = !model.get("editable");
    promptBox.readOnly = ro;
    completionBox.readOnly = ro;
  }
  function drawOptions() {
    const opts = model.get("options") || [];
    select.replaceChildren();
    const own = document.createElement("option");
    own.value = "-1";
    own.textContent = "\u2014 your own text \u2014";
    select.appendChild(own);
    opts.forEach((label, i) => {
      const o = document.createElement("option");
      o.value = String(i);
      o.textContent = label;
      select.appendChild(o);
    });
    select.value = String(model.get("choice"));
    pick.classList.toggle("sftviz-hidden", opts.length === 0 || !model.get("editable"));
  }
  function drawIdentity() {
    const d = model.get("identity") || {};
    ident.replaceChildren();
    if (d.joint === undefined) return;
    const eq = svEl("div", "sftviz-eq");
    const term = (label, value, cls, key) => {
      const t = svEl("span", "sftviz-term " + cls);
      t.append(svEl("span", "sftviz-termlabel", label));
      const v = svEl("span", "sftviz-termvalue", value);
      v.dataset.sftvizSum = key;
      t.append(v);
      return t;
    };
    eq.append(
      term("log Pr([x, y])", d.joint, "sftviz-term-joint", "joint"), svEl("span", "sftviz-op", "="),
      term("log Pr(x)", d.marginal, "sftviz-term-x", "marginal"), svEl("span", "sftviz-op", "+"),
      term("log Pr(y | x)", d.conditional, "sftviz-term-y", "conditional"));
    ident.append(eq);
    ident.append(svEl("div", "sftviz-caption",
      `${d.n_prompt} prompt tokens + ${d.n_completion} completion tokens \u00b7 Pr(y | x) = ${d.prob_y_given_x}` +
      ` \u00b7 masked SFT loss here (mean NLL per completion token) = ${d.loss} nats`));
    ident.append(svEl("div", d.ok ? "sftviz-note" : "sftviz-error", d.check));
  }
  function drawStrip() {
    strip.replaceChildren();
    let prev = null;
    for (const rec of model.get("tokens") || []) {
      if (rec.segment !== prev && svIsLabelled(rec.segment)) strip.appendChild(svSegLabel(rec.segment));
      prev = rec.segment;
      const c = svChip(rec);
      c._svTip = rec.tip;
      c.tabIndex = 0;
      strip.appendChild(c);
      if (rec.newline) strip.appendChild(svEl("span", "sftviz-break"));
    }
  }
  function sumRow(label, value, why) {
    const tr = svEl("tr", "sftviz-sumrow");
    tr.append(svEl("td"));
    const td = svEl("td", null, label + " ");
    td.colSpan = 3;
    td.append(svEl("span", "sftviz-caption", "(" + why + ")"));
    tr.append(td, svEl("td", "sftviz-num", value), svEl("td"), svEl("td"));
    return tr;
  }
  function drawTable() {
    const rows = model.get("rows") || [];
    const d = model.get("identity") || {};
    const table = svEl("table", "sftviz-table sftviz-logprobs");
    const head = svEl("tr");
    for (const h of ["pos", "token", "part", "\u2212log Pr (bar)", "log Pr", "\u03a3 joint so far", "\u03a3 part so far"]) head.append(svEl("th", null, h));
    table.append(head);
    let prev = null;
    for (const r of rows) {
      if (prev === "x" && r.part === "y") table.append(sumRow("log Pr(x) =", d.marginal, "sum of the prompt rows above"));
      prev = r.part;
      const tr = svEl("tr");
      tr.dataset.sftvizPart = r.part;
      const chip = svChip(r, { logprob: false });
      chip._svTip = r.tip;
      const tdTok = svEl("td");
      tdTok.append(chip);
      const track = svEl("span", "sftviz-bartrack");
      const bar = svEl("span", "sftviz-bar " + (r.part === "y" ? "sftviz-bar-y" : "sftviz-bar-x"));
      bar.style.width = (100 * r.bar).toFixed(1) + "%";
      track.append(bar);
      const tdBar = svEl("td");
      tdBar.append(track);
      tr.append(svEl("td", "sftviz-num", r.position), tdTok, svEl("td", null, r.part === "y" ? "y | x" : "x"), tdBar,
        svEl("td", "sftviz-num", svFmt(r.logprob)), svEl("td", "sftviz-num", svFmt(r.running_joint)),
        svEl("td", "sftviz-num", svFmt(r.running_part)));
      table.append(tr);
    }
    if (rows.length) {
      if (prev === "x") table.append(sumRow("log Pr(x) =", d.marginal, "sum of the prompt rows above"));
      table.append(sumRow("log Pr(y | x) =", d.conditional, "sum of the completion rows above"));
      table.append(sumRow("log Pr([x, y]) =", d.joint, "every row: marginal + conditional"));
    }
    tableWrap.replaceChildren(table);
  }
  function drawResults() {
    drawIdentity();
    drawStrip();
    drawTable();
    notes.replaceChildren(...(model.get("notes") || []).map((n) => svEl("div", "sftviz-note", n)));
    results.classList.toggle("sftviz-stale", !!model.get("stale"));
    if (!timer) status.textContent = model.get("stale") ? "showing the last text that could be scored" : "";
  }
  function drawTitle() {
    title.textContent = model.get("title") || "";
    title.classList.toggle("sftviz-hidden", !model.get("title"));
  }

  const unbindError = svBindError(model, error);
  const offs = [
    svOn(model, ["prompt", "completion", "editable"], drawText),
    svOn(model, ["options", "choice", "editable"], drawOptions),
    svOn(model, ["revision", "tokens", "rows", "identity", "notes", "stale"], drawResults),
    svOn(model, ["title"], drawTitle),
  ];
  drawTitle(); drawOptions(); drawText(); drawResults();
  return () => {
    if (timer) clearTimeout(timer);
    offs.forEach((f) => f());
    unbindError();
    promptBox.removeEventListener("input", onInput);
    completionBox.removeEventListener("input", onInput);
    select.removeEventListener("change", onSelect);
    tip.hide();
  };
}

export default { render };
