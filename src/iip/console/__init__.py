"""Web console shell: layout, login, navigation, i18n (zh-CN, en), static assets."""
