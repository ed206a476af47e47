// sftviz: helpers shared by the widgets' ES modules. The Python side prepends this file to each
// widget's module (no build step), so these names are in scope there. Token and user text is only
// ever set with textContent, never parsed as HTML.
//
// SV_VOCAB, the display vocabulary (segment words, special and labelled segments, whitespace
// symbols), is defined just above this file by sftviz/widgets/_base.py from sftviz/views/vocab.py.

const SV_WS = SV_VOCAB.whitespace;

function svSegment(name) {
  return Object.prototype.hasOwnProperty.call(SV_VOCAB.segments, name) ? SV_VOCAB.segments[name] : null;
}
// How views name a segment (its words in the vocabulary); an unknown segment by its own name.
function svSegmentWords(name) { const s = svSegment(name); return s ? s.words : name; }
function svIsSpecial(name) { const s = svSegment(name); return !!(s && s.special); }
// Whether a run of this segment starts with a text label.
function svIsLabelled(name) { const s = svSegment(name); return !!(s && s.labelled); }

function svEl(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// Mirror of sftviz.views.records.display_parts: whitespace made visible, in its own dim span.
function svAppendText(parent, text) {
  if (text === "") { parent.appendChild(svEl("span", "sftviz-ws", SV_VOCAB.emptyToken)); return; }
  let buf = "", kind = null;
  const flush = () => {
    if (!buf) return;
    if (kind === "ws") parent.appendChild(svEl("span", "sftviz-ws", buf));
    else parent.appendChild(document.createTextNode(buf));
    buf = "";
  };
  for (const ch of text) {
    const isWs = ch in SV_WS || /\s/.test(ch);
    const k = isWs ? "ws" : "txt";
    if (k !== kind) flush();
    kind = k;
    buf += isWs ? (SV_WS[ch] || SV_VOCAB.otherWhitespace) : ch;
  }
  flush();
}

function svFmt(v, digits) {
  if (v === null || v === undefined) return "\u2013";
  return v.toFixed(digits === undefined ? 3 : digits).replace("-", "\u2212");
}

// One token element; rec is a record from sftviz.views.records.token_records (or gradient_records).
function svChip(rec, opts) {
  opts = opts || {};
  const role = opts.role || "token";
  const c = svEl("span", "sftviz-tok");
  if (rec.special || svIsSpecial(rec.segment)) c.classList.add("sftviz-special");
  if (rec.trained && rec.weight < 1) c.classList.add("sftviz-weighted");
  c.dataset.sftvizSegment = rec.segment;
  c.dataset.sftvizTrained = rec.trained ? "true" : "false";
  c.dataset.sftvizPosition = String(rec.position);
  c.dataset.sftvizRole = role;
  const txt = svEl("span", "sftviz-txt");
  svAppendText(txt, rec.text);
  c.appendChild(txt);
  if (rec.trained && role !== "input") {
    const m = svEl("span", "sftviz-mark", "\u2713");
    m.setAttribute("aria-label", "trained");
    c.appendChild(m);
  }
  if (opts.logprob !== false && role !== "input" && rec.logprob !== null && rec.logprob !== undefined) {
    c.appendChild(svEl("span", "sftviz-lp", svFmt(rec.logprob, 2)));
  }
  c.setAttribute("aria-label", (rec.tip || []).join(". "));
  return c;
}

function svSegLabel(segment) {
  const l = svEl("span", "sftviz-seglabel", svSegmentWords(segment));
  l.dataset.sftvizSegment = segment;
  return l;
}

// A floating tooltip inside `root`, shown for any element carrying ._svTip (a list of lines).
function svTooltip(root) {
  const tip = svEl("div", "sftviz-tip sftviz-hidden");
  tip.setAttribute("role", "tooltip");
  root.appendChild(tip);
  const show = (target) => {
    const lines = target._svTip;
    if (!lines || !lines.length) return;
    tip.textContent = lines.join("\n");
    tip.classList.remove("sftviz-hidden");
    const r = target.getBoundingClientRect(), base = root.getBoundingClientRect();
    let left = r.left - base.left;
    const maxLeft = Math.max(0, root.clientWidth - 430);
    if (left > maxLeft) left = maxLeft;
    tip.style.left = left + "px";
    // Below the token if it fits inside the widget (the notebook's output area clips what sticks out),
    // else above it when that fits, else wherever more of it shows.
    const h = tip.offsetHeight, below = r.bottom - base.top + 6, above = r.top - base.top - 6 - h;
    const fitsBelow = below + h <= root.clientHeight;
    const useAbove = !fitsBelow && (above >= 0 || r.top - base.top > root.clientHeight - (r.bottom - base.top));
    tip.style.top = (useAbove ? Math.max(0, above) : below) + "px";
    tip.classList.toggle("sftviz-tip-above", useAbove);
  };
  const hide = () => tip.classList.add("sftviz-hidden");
  const find = (e) => { let t = e.target; while (t && t !== root) { if (t._svTip) return t; t = t.parentNode; } return null; };
  const over = (e) => { const t = find(e); if (t) show(t); };
  const out = (e) => { if (find(e)) hide(); };
  root.addEventListener("mouseover", over);
  root.addEventListener("mouseout", out);
  root.addEventListener("focusin", over);
  root.addEventListener("focusout", out);
  return { show, hide, el: tip };
}

// Render the model's `error` traitlet into `box` (text only), and keep it in sync.
function svBindError(model, box) {
  const update = () => {
    const msg = model.get("error") || "";
    box.textContent = msg;
    box.classList.toggle("sftviz-hidden", msg === "");
  };
  model.on("change:error", update);
  update();
  return () => model.off("change:error", update);
}

function svLegend(segments) {
  const lg = svEl("div", "sftviz-legend");
  const seen = [];
  for (const s of segments) if (!seen.includes(s)) seen.push(s);
  for (const s of seen) {
    const item = svEl("span", "sftviz-legend-item");
    const t = svEl("span", "sftviz-tok", svSegmentWords(s));
    if (svIsSpecial(s)) t.classList.add("sftviz-special");
    t.dataset.sftvizSegment = s;
    t.dataset.sftvizRole = "legend";
    item.appendChild(t);
    lg.appendChild(item);
  }
  const sample = (seg, trained, words) => {
    const item = svEl("span", "sftviz-legend-item");
    const t = svEl("span", "sftviz-tok", "ab");
    t.dataset.sftvizSegment = seg;
    t.dataset.sftvizTrained = trained ? "true" : "false";
    t.dataset.sftvizRole = "legend";
    if (trained) t.appendChild(svEl("span", "sftviz-mark", "\u2713"));
    item.appendChild(t);
    item.appendChild(document.createTextNode(words));
    lg.appendChild(item);
  };
  sample("completion", true, "trained: a target of the loss (solid border, underline, \u2713)");
  sample("prompt", false, "masked: context only, label \u2212100 (dashed, hatched)");
  return lg;
}

// Listen to several traitlets; returns a function that stops listening.
function svOn(model, names, cb) {
  for (const n of names) model.on("change:" + n, cb);
  return () => { for (const n of names) model.off("change:" + n, cb); };
}
