DROP TABLE stripe."customer_active_entitlements";
DROP TABLE stripe."entitlements_active_entitlement_summarys";
