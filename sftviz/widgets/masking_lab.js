// MaskingLab's status panel: progress bar, status, error, what the chosen fault does, and the runs table.
function render({ model, el }) {
  const root = svEl("div", "sftviz sftviz-labpanel");
  const about = svEl("div", "sftviz-note sftviz-about");
  const row = svEl("div", "sftviz-progressrow");
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.className = "sftviz-progress";
  const ptext = svEl("span", "sftviz-caption");
  row.append(bar, ptext);
  const status = svEl("div", "sftviz-caption sftviz-status");
  status.setAttribute("aria-live", "polite");
  const error = svEl("div", "sftviz-error sftviz-hidden");
  error.setAttribute("role", "alert");
  const tableWrap = svEl("div");
  root.append(about, row, status, error, tableWrap);
  el.appendChild(root);

  function draw() {
    const cols = model.get("columns") || [];  // [key, heading] pairs, from views/html.py's RUN_COLUMNS
    about.textContent = model.get("about") || "";
    about.classList.toggle("sftviz-hidden", !model.get("about"));
    bar.value = model.get("progress") || 0;
    bar.setAttribute("aria-label", "training progress");
    ptext.textContent = model.get("progress_text") || "";
    status.textContent = model.get("status") || "";
    root.classList.toggle("sftviz-running", !!model.get("running"));
    const runs = model.get("runs") || [];
    if (!runs.length) {
      tableWrap.replaceChildren(svEl("div", "sftviz-note sftviz-empty", model.get("empty") || "No runs yet: choose a masking and press Run."));
      return;
    }
    const table = svEl("table", "sftviz-table");
    const head = svEl("tr");
    for (const [, h] of cols) head.append(svEl("th", null, h));
    table.append(head);
    for (const r of runs) {
      const tr = svEl("tr");
      for (const [k] of cols) {
        const v = r[k];
        const num = typeof v === "number";
        tr.append(svEl("td", num ? "sftviz-num" : null, num ? svFmt(v) : (v === null || v === undefined ? "\u2013" : v)));
      }
      table.append(tr);
    }
    tableWrap.replaceChildren(table);
  }
  // A wide table scrolls sideways inside its own box (narrow screens); the box can be focused, so it can
  // be scrolled with the keyboard, and it is named for screen readers.
  tableWrap.className = "sftviz-tablewrap";
  tableWrap.tabIndex = 0;
  tableWrap.setAttribute("role", "region");
  tableWrap.setAttribute("aria-label", "runs");
  // The front end's theme, for the plotly figure (drawn by Python): JupyterLab marks it on <body>, and
  // VS Code with a class; a change of theme is sent on.
  function theme() {
    const b = document.body;
    if (b.dataset.jpThemeLight) return b.dataset.jpThemeLight === "false" ? "dark" : "light";
    return b.classList.contains("vscode-dark") || b.classList.contains("vscode-high-contrast") ? "dark" : "light";
  }
  function sendTheme() {
    const t = theme();
    if (model.get("theme") !== t) { model.set("theme", t); model.save_changes(); }
  }
  // The lab's width, for the figure (drawn by Python at that width); sent when it settles.
  let widthTimer = null;
  const sizer = new ResizeObserver(() => {
    clearTimeout(widthTimer);
    widthTimer = setTimeout(() => {
      const w = Math.round(root.getBoundingClientRect().width);
      if (w > 0 && w !== model.get("width")) { model.set("width", w); model.save_changes(); }
    }, 150);
  });
  sizer.observe(root);
  const watcher = new MutationObserver(sendTheme);
  watcher.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name", "class"] });
  sendTheme();
  const unbindError = svBindError(model, error);
  const off = svOn(model, ["about", "progress", "progress_text", "status", "running", "runs", "columns", "empty"], draw);
  draw();
  return () => { off(); unbindError(); watcher.disconnect(); sizer.disconnect(); clearTimeout(widthTimer); };
}

export default { render };
