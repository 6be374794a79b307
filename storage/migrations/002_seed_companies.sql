-- The group's companies; data, not code: admins add and rename them later.
INSERT INTO companies (code, name, business_id) VALUES
    ('oulun-sahkonmyynti', 'Oulun Sähkönmyynti Oy', '1703296-5'),
    ('haukiputaan-sahkoosuuskunta', 'Haukiputaan Sähköosuuskunta', NULL),
    ('kemin-energia', 'Kemin Energia Oy', NULL),
    ('keminmaan-energia', 'Keminmaan Energia Oy', NULL),
    ('raahen-energia', 'Raahen Energia Oy', NULL),
    ('rantakairan-sahko', 'Rantakairan Sähkö Oy', NULL),
    ('tenergia', 'Tenergia Oy', NULL),
    ('tornion-energia', 'Tornion Energia Oy', NULL),
    ('oulun-energia', 'Oulun Energia Oy', NULL)
ON CONFLICT (code) DO NOTHING;
