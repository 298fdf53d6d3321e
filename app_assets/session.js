// The live-session component's js_on_load: the page's Gradio session hash, which the page's load
// event returns, for the live slider (live_slider.js) to send with each move.
(window.ccvae ??= { probs: {} }).session = props.value;
watch("value", () => { window.ccvae.session = props.value; });
