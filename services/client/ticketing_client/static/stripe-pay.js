// PAYMENT_PROVIDER=stripe: Stripe's own card field (Stripe.js) turns the card into a token in the browser, so the
// card number never reaches our servers; the form then posts the token like the fake provider's test cards.
(function () {
  var script = document.getElementById("stripe-pay");
  var form = document.getElementById("pay-form");
  if (!script || !form || typeof Stripe === "undefined") return;
  var stripe = Stripe(script.getAttribute("data-key"));
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  form.addEventListener("submit", function (event) {
    if (document.getElementById("token").value) return;
    event.preventDefault();
    stripe.createToken(card).then(function (result) {
      if (result.error) {
        document.getElementById("card-errors").textContent = result.error.message;
        return;
      }
      document.getElementById("token").value = result.token.id;
      form.submit();
    });
  });
})();
