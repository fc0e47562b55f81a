// Tests of Table rendering.
#include "client/table.h"

#include "gtest/gtest.h"

namespace poold::client {
namespace {

TEST(TableTest, AlignsColumns) {
  Table table({{"pool", Table::kLeft}, {"blocks"}, {"note", Table::kLeft}});
  table.AddRow({"small", "42", "a"});
  table.AddRow({"medium", "1000", ""});
  EXPECT_EQ(table.Render(),
            "pool    blocks  note\n"
            "small       42  a\n"
            "medium    1000\n");
}

TEST(TableTest, MissingCellsAreEmptyAndExtraCellsDropped) {
  Table table({{"a", Table::kLeft}, {"b"}});
  table.AddRow({"x"});
  table.AddRow({"y", "2", "dropped"});
  EXPECT_EQ(table.Render(),
            "a  b\n"
            "x\n"
            "y  2\n");
  EXPECT_EQ(table.rows(), 2u);
}

TEST(TableTest, HeaderOnly) {
  Table table({{"only"}});
  EXPECT_EQ(table.Render(), "only\n");
}

}  // namespace
}  // namespace poold::client
