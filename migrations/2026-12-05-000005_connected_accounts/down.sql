DROP TABLE stripe."accounts";
