// Quiz: pick a choice, get feedback at once (graded on the Python side).
function render({ model, el }) {
  const LETTERS = "ABCDEFGH";
  const root = svEl("div", "sftviz sftviz-quizw");
  const title = svEl("div", "sftviz-title");
  const desc = svEl("div", "sftviz-caption");
  const score = svEl("div", "sftviz-score");
  score.setAttribute("aria-live", "polite");
  const error = svEl("div", "sftviz-error sftviz-hidden");
  error.setAttribute("role", "alert");
  const list = svEl("div", "sftviz-qlist");
  root.append(title, desc, score, error, list);
  el.appendChild(root);

  function choose(qid, i) {
    const r = Object.assign({}, model.get("responses") || {});
    r[qid] = i;
    model.set("responses", r);
    model.save_changes();
  }
  function draw() {
    title.textContent = model.get("title") || "";
    desc.textContent = model.get("description") || "";
    score.textContent = model.get("score_text") || "";
    const responses = model.get("responses") || {};
    const feedback = model.get("feedback") || {};
    // Keep the keyboard focus on the same choice across the redraw that every answer causes.
    const f = list.contains(document.activeElement) ? document.activeElement : null;
    const card0 = f && f.closest ? f.closest(".sftviz-qcard") : null;
    const keep = card0 && f.dataset.sftvizChoice !== undefined ? [card0.dataset.sftvizQuestion, f.dataset.sftvizChoice] : null;
    list.replaceChildren();
    (model.get("questions") || []).forEach((q, n) => {
      const card = svEl("div", "sftviz-qcard");
      card.dataset.sftvizQuestion = q.id;
      const head = svEl("div", "sftviz-qhead");
      head.append(svEl("span", "sftviz-qnum", String(n + 1) + "."));
      if (q.type === "true_false") head.append(svEl("span", "sftviz-qtag", "true or false"));
      if (q.topic) head.append(svEl("span", "sftviz-qtag", q.topic));
      card.append(head, svEl("div", "sftviz-qprompt", q.prompt));
      const fb = feedback[q.id];
      const choices = svEl("div", "sftviz-choices");
      choices.setAttribute("role", "radiogroup");
      q.choices.forEach((text, i) => {
        const b = svEl("button", "sftviz-choice");
        b.type = "button";
        b.setAttribute("role", "radio");
        b.setAttribute("aria-checked", responses[q.id] === i ? "true" : "false");
        b.dataset.sftvizChoice = String(i);
        const letter = q.type === "true_false" ? "" : LETTERS[i] + ". ";
        b.append(svEl("span", "sftviz-letter", letter), svEl("span", null, text));
        if (fb) {
          if (i === fb.answer) { b.classList.add("sftviz-right"); b.append(svEl("span", "sftviz-verdict", " \u2713 right answer")); }
          else if (i === fb.choice) { b.classList.add("sftviz-wrong"); b.append(svEl("span", "sftviz-verdict", " \u2717 your pick")); }
        }
        if (responses[q.id] === i) b.classList.add("sftviz-picked");
        b.addEventListener("click", () => choose(q.id, i));
        choices.append(b);
      });
      card.append(choices);
      if (fb) {
        const box = svEl("div", "sftviz-feedback " + (fb.correct ? "sftviz-ok" : "sftviz-no"));
        box.append(svEl("div", "sftviz-fbhead", fb.correct ? "\u2713 Correct." : "\u2717 Not quite: the answer is " + fb.answer_text + (/[.!?]$/.test(fb.answer_text) ? "" : ".")));
        if (!fb.correct && fb.why) box.append(svEl("div", "sftviz-why", fb.why));
        box.append(svEl("div", "sftviz-expl", fb.explanation));
        card.append(box);
      }
      list.append(card);
    });
    if (keep) {
      const again = list.querySelector('.sftviz-qcard[data-sftviz-question="' + CSS.escape(keep[0]) +
        '"] .sftviz-choice[data-sftviz-choice="' + keep[1] + '"]');
      if (again) again.focus({ preventScroll: true });
    }
  }
  const unbindError = svBindError(model, error);
  const off = svOn(model, ["questions", "responses", "feedback", "score_text", "title", "description"], draw);
  draw();
  return () => { off(); unbindError(); };
}

export default { render };
