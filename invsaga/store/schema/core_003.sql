-- Core database, version 3: the product catalog's versions (issue 12, catalog).
--
-- Every change to a product bumps its version (a write that changes nothing leaves it alone), so a client
-- can compare-and-set on it (HTTP If-Match). The checks mirror the domain's rules as a second line of
-- defence; NOT VALID keeps the migration from failing on rows written before them, while every new or
-- changed row must pass.
ALTER TABLE products ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1);

ALTER TABLE products
    ADD CONSTRAINT products_name_present CHECK (char_length(name) BETWEEN 1 AND 200) NOT VALID;

ALTER TABLE products ADD CONSTRAINT products_currency_code CHECK (currency ~ '^[A-Z]{3}$') NOT VALID;
