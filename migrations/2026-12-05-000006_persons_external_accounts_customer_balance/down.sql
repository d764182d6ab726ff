DROP TABLE stripe."customer_balance_transactions";
DROP TABLE stripe."cards";
DROP TABLE stripe."bank_accounts";
DROP TABLE stripe."persons";
