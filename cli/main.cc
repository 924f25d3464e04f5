#include <cstdio>
int main() { std::puts("onboard " ONBOARD_VERSION); return 0; }
