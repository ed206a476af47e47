// GradientView: gradient magnitude per token (the example's loss, e.g. completion-only, vs the full loss) and per layer.
function render({ model, el }) {
  const root = svEl("div", "sftviz sftviz-gradview");
  const title = svEl("div", "sftviz-title");
  const summary = svEl("div", "sftviz-summary");
  const controls = svEl("div", "sftviz-controls");
  const radios = {};
  const group = "sv-what-" + Math.random().toString(36).slice(2);
  for (const [value, words] of [["input", "gradient reaching each input embedding"], ["target", "each target's share of the weight gradient"]]) {
    const lab = svEl("label");
    const r = document.createElement("input");
    r.type = "radio"; r.name = group; r.value = value;
    radios[value] = r;
    lab.append(r, document.createTextNode(words));
    controls.append(lab);
  }
  const logLab = svEl("label");
  const logBox = document.createElement("input");
  logBox.type = "checkbox";
  logLab.append(logBox, document.createTextNode("log scale"));
  controls.append(logLab);
  const key = svEl("div", "sftviz-barkey");
  const keyItem = (cls, words) => {
    const s = svEl("span", "sftviz-legend-item");
    s.append(svEl("span", "sftviz-bar " + cls), document.createTextNode(words));
    return s;
  };
  const error = svEl("div", "sftviz-error sftviz-hidden");
  error.setAttribute("role", "alert");
  const caption = svEl("div", "sftviz-caption");
  const strip = svEl("div", "sftviz-strip sftviz-gradstrip");
  const layersBox = svEl("div");
  const cosine = svEl("div", "sftviz-caption sftviz-cosine");
  const legend = svEl("div");
  root.append(title, summary, controls, key, error, caption, strip, layersBox, cosine, legend);
  el.appendChild(root);
  const tip = svTooltip(root);
  const H = 48;

  const height = (v, vmax, log) => {
    if (v === null || v === undefined || !vmax || v <= 0) return 0;
    if (!log) return Math.min(1, v / vmax) * H;
    const floor = vmax * 1e-4;  // four decades
    return Math.max(0, Math.min(1, (Math.log10(Math.max(v, floor)) - Math.log10(floor)) / 4)) * H;
  };
  function draw() {
    const what = model.get("what");
    const log = model.get("log_scale");
    const scale = model.get("scale") || {};
    const recs = model.get("tokens") || [];
    title.textContent = model.get("title") || "";
    title.classList.toggle("sftviz-hidden", !model.get("title"));
    summary.textContent = model.get("summary") || "";
    for (const v in radios) radios[v].checked = v === what;
    logBox.checked = log;
    const name = model.get("masked_name") || "completion-only";
    key.replaceChildren(keyItem("sftviz-bar-masked", name + " loss (left, solid)"), keyItem("sftviz-bar-full", "full loss (right, striped)"));
    caption.textContent = what === "input"
      ? (name === "completion-only"
          ? "|d loss / d input embedding| at each position. Prompt tokens are not targets under the completion-only loss, " +
            "yet they still get gradient: the completion's predictions read them through attention. The last token gets none."
          : "|d loss / d input embedding| at each position. Tokens that are not targets of the " + name + " loss still get " +
            "gradient when later predictions read them through attention. The last token gets none.")
      : (name === "completion-only"
          ? "Each target token's contribution to the gradient of the weights. Under the completion-only loss only completion " +
            "targets contribute (no bar on prompt tokens); under the full loss every token after the first does."
          : "Each target token's contribution to the gradient of the weights. Under the " + name + " loss only its trained " +
            "targets contribute, in proportion to their weights; under the full loss every token after the first does.");
    const km = what === "input" ? "input_masked" : "target_masked";
    const kf = what === "input" ? "input_full" : "target_full";
    const vmax = what === "input" ? scale.input : scale.target;
    strip.replaceChildren();
    for (const r of recs) {
      const col = svEl("span", "sftviz-col");
      const bars = svEl("span", "sftviz-bars");
      bars.style.height = (H + 2) + "px";
      for (const [k, cls] of [[km, "sftviz-bar-masked"], [kf, "sftviz-bar-full"]]) {
        const b = svEl("span", "sftviz-bar " + cls);
        b.style.height = height(r[k], vmax, log).toFixed(1) + "px";
        b.dataset.sftvizValue = r[k] === null ? "" : String(r[k]);
        bars.append(b);
      }
      const chip = svChip(r, { logprob: false });
      chip._svTip = r.tip;
      chip.tabIndex = 0;
      col.append(bars, chip);
      col._svTip = r.tip;
      strip.append(col);
    }
    const layers = model.get("layers") || [];
    const table = svEl("table", "sftviz-table sftviz-layers");
    const head = svEl("tr");
    for (const h of ["parameter group", name, "", "full", ""]) head.append(svEl("th", null, h));
    table.append(head);
    for (const x of layers) {
      const tr = svEl("tr");
      const cell = (v, cls) => {
        const td = svEl("td");
        const track = svEl("span", "sftviz-bartrack");
        const b = svEl("span", "sftviz-bar " + cls);
        b.style.width = (scale.layer ? 100 * Math.min(1, v / scale.layer) : 0).toFixed(1) + "%";
        track.append(b);
        td.append(track);
        return td;
      };
      const num = (v) => (typeof v === "number" ? v.toPrecision(3) : "\u2013");
      tr.append(svEl("td", null, x.name), cell(x.masked || 0, "sftviz-bar-masked"), svEl("td", "sftviz-num", num(x.masked)),
        cell(x.full || 0, "sftviz-bar-full"), svEl("td", "sftviz-num", num(x.full)));
      table.append(tr);
    }
    layersBox.replaceChildren(svEl("div", "sftviz-caption", "Gradient norm per parameter group"), table);
    cosine.textContent = model.get("cosine_text") || "";
    legend.replaceChildren(svLegend(recs.map((r) => r.segment)));
  }
  const onRadio = (e) => { model.set("what", e.target.value); model.save_changes(); };
  const onLog = () => { model.set("log_scale", logBox.checked); model.save_changes(); };
  for (const v in radios) radios[v].addEventListener("change", onRadio);
  logBox.addEventListener("change", onLog);
  const unbindError = svBindError(model, error);
  const off = svOn(model, ["tokens", "layers", "what", "log_scale", "scale", "cosine_text", "masked_name", "title", "summary"], draw);
  draw();
  return () => {
    off();
    unbindError();
    for (const v in radios) radios[v].removeEventListener("change", onRadio);
    logBox.removeEventListener("change", onLog);
    tip.hide();
  };
}

export default { render };
