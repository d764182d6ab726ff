DROP TABLE stripe.events;
