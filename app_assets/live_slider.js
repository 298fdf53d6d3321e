// The edited face's js_on_load (gr.HTML): live slider moves.
//
// While a slider is dragged, each new position goes to this component's server function
// live_slide (one POST to /component_server) with the page's session hash (set by the page's
// load event, app_assets/session.js), the label's index and the value; the server edits that
// session's face as the slider's Gradio event would and answers with the face and q(y_i | z_i)
// (and the q of the labels kept exclusive with this one, which the move may have cleared). They
// are shown through the components' own props, so Gradio's view of their values stays true. At
// most one move is in flight and the latest position of every slider is always sent. The end of
// a drag (or a typed value) goes through the slider's Gradio event, which is also the API.
const ccvae = (window.ccvae ??= { probs: {} });
const labels = JSON.parse(props.labels);
const pending = new Map();  // label index -> latest value not yet sent
let busy = false;
async function pump() {
  busy = true;
  while (pending.size) {
    const [index, value] = pending.entries().next().value;
    pending.delete(index);
    try {
      const answer = await server.live_slide([ccvae.session, index, value]);
      if (answer && answer.face) {
        props.value = answer.face;
        props.notice = "";
        ccvae.probs[index]?.(answer.prob);
        for (const [other, html] of Object.entries(answer.others || {})) ccvae.probs[other]?.(html);
      } else {
        props.notice = (answer && answer.error) || "The live slider got no answer.";
      }
    } catch (error) {
      console.warn("live slider move failed", error);
    }
  }
  busy = false;
}
ccvae.live = (range) => {
  const owner = range.closest('[id^="slider-"]');
  const index = owner ? labels.indexOf(owner.id.slice(7)) : -1;
  if (index < 0 || !ccvae.session) return;  // before the load event: the release event edits
  pending.set(index, Number(range.value));
  if (!busy) pump();
};
if (!ccvae.listening) {
  ccvae.listening = true;
  document.addEventListener("input", (event) => {
    const range = event.target;
    if (range instanceof HTMLInputElement && range.type === "range") ccvae.live?.(range);
  }, true);
}
